//! The operator thread: suspends and resumes, soft-deletes and restores, migrates between
//! isolation levels, changes names, limits and weights, exports and creates tenants,
//! remembering what each acknowledged answer promised.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::OPERATOR_KEY;
use crate::model::{Failures, Rng, Shared, TENANTS, http, send_with, tenant_id};

pub const LEVELS: [&str; 3] = ["shared", "partition", "dedicated"];

pub struct OperatorModel {
    /// Per tenant, the statuses its operations allow after a restart: one when the last
    /// operation was answered, two when its answer never arrived.
    pub status: Vec<Vec<&'static str>>,
    /// Likewise, the isolation levels.
    pub level: Vec<Vec<String>>,
    /// Likewise, the profile its updates set: display name, limits and weight, as
    /// `GET /v1/admin/tenants/{id}` answers them.
    pub profile: Vec<Vec<Value>>,
    /// Tenants whose creation was answered `201`.
    pub created: Vec<String>,
    /// This round's acknowledged operations that must have left an audit row: the tenant, the
    /// `X-Request-Id` sent, the action.
    pub audited: Vec<(String, String, &'static str)>,
    /// Acknowledged operations of the current round, by kind.
    pub acknowledged: BTreeMap<&'static str, usize>,
    made: usize,
    /// Requests sent so far, naming their request ids.
    requests: usize,
}

impl OperatorModel {
    pub fn new() -> OperatorModel {
        OperatorModel {
            status: vec![vec!["active"]; TENANTS],
            level: vec![vec!["shared".to_owned()]; TENANTS],
            profile: vec![vec![initial_profile()]; TENANTS],
            created: Vec::new(),
            audited: Vec::new(),
            acknowledged: BTreeMap::new(),
            made: 0,
            requests: 0,
        }
    }

    pub fn run(
        &mut self,
        mut rng: Rng,
        round: u64,
        url: &str,
        shared: &Shared,
        stop: &AtomicBool,
        failures: &Failures,
    ) {
        self.acknowledged.clear();
        self.audited.clear();
        let http = http();
        let call = |method: &str, path: &str, body: Option<Value>, request_id: &str| {
            send_with(
                &http,
                method,
                &format!("{url}{path}"),
                OPERATOR_KEY,
                body.as_ref(),
                &[("x-request-id", request_id)],
            )
            .map(|(s, v, _)| (s, v))
        };
        while !stop.load(Ordering::SeqCst) {
            let t = rng.below(TENANTS);
            let id = tenant_id(t);
            let going_on = match rng.below(7) {
                0 => self.pause(t, &mut rng, shared, failures, &call, ("suspend", "resume")),
                1 => self.pause(t, &mut rng, shared, failures, &call, ("delete", "restore")),
                // Now and then the tenant is deleted (and restored) while its move runs.
                2 | 3 => {
                    self.migrate(t, &mut rng, shared, failures, &call)
                        && (rng.below(3) != 0
                            || self.pause(
                                t,
                                &mut rng,
                                shared,
                                failures,
                                &call,
                                ("delete", "restore"),
                            ))
                }
                4 => self.update(t, &mut rng, failures, &call),
                5 => match export(&http, url, &id) {
                    Err(_) => false,
                    Ok((200, lines)) => {
                        *self.acknowledged.entry("export").or_default() += 1;
                        if let Some(bad) = lines.iter().find(|l| l["type"].as_str().is_none()) {
                            failures.push(format!("tenant {id}: export line {bad}"));
                        }
                        true
                    }
                    // Refused while the tenant moves, or under load: nothing to check. (The
                    // tenant is never deleted here: this thread restores it before going on.)
                    Ok((409 | 503, _)) => true,
                    Ok((s, _)) => {
                        failures.push(format!("tenant {id}: export answered {s}"));
                        false
                    }
                },
                _ => {
                    let new = format!("chaosx{round}n{}", self.made);
                    self.made += 1;
                    let request_id = self.request_id();
                    let body = Some(json!({ "id": new }));
                    match call("POST", "/v1/admin/tenants", body, &request_id) {
                        Err(_) => false,
                        Ok((201, _)) => {
                            *self.acknowledged.entry("create").or_default() += 1;
                            self.audited
                                .push((new.clone(), request_id, "tenant.create"));
                            self.created.push(new);
                            true
                        }
                        Ok((s, v)) => {
                            failures.push(format!("creating tenant {new}: {s}: {v}"));
                            false
                        }
                    }
                }
            };
            if !going_on {
                return;
            }
            std::thread::sleep(Duration::from_millis(20 + rng.below(130) as u64));
        }
    }

    /// Suspends (or soft-deletes) a tenant, waits a moment, and resumes (or restores) it; the
    /// clients are told beforehand, so their refusals meanwhile are expected.
    fn pause(
        &mut self,
        t: usize,
        rng: &mut Rng,
        shared: &Shared,
        failures: &Failures,
        call: &impl Fn(&str, &str, Option<Value>, &str) -> Result<(u16, Value), String>,
        (off, on): (&str, &str),
    ) -> bool {
        let id = tenant_id(t);
        let (off_status, off_req) = match off {
            "suspend" => (
                "suspended",
                ("POST", format!("/v1/admin/tenants/{id}/suspend")),
            ),
            _ => ("deleted", ("DELETE", format!("/v1/admin/tenants/{id}"))),
        };
        let on_path = format!("/v1/admin/tenants/{id}/{on}");
        shared.set_disturbed(t, true);
        let request_id = self.request_id();
        match call(off_req.0, &off_req.1, Some(json!({})), &request_id) {
            Err(_) => {
                self.status[t] = vec!["active", off_status];
                return false;
            }
            // Answered with the tenant in its new state.
            Ok((200, v)) if v["id"] == id.as_str() && v["status"] == off_status => {
                *self.acknowledged.entry(off_status).or_default() += 1;
                let action = if off == "suspend" {
                    "tenant.suspend"
                } else {
                    "tenant.delete"
                };
                self.audited.push((id.clone(), request_id, action));
                self.status[t] = vec![off_status];
            }
            // Refused while a migration moves the tenant: it stays active.
            Ok((409, _)) => {
                shared.set_disturbed(t, false);
                return true;
            }
            Ok((s, v)) => {
                failures.push(format!("tenant {id}: {off} answered {s}: {v}"));
                return false;
            }
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(150) as u64));
        let request_id = self.request_id();
        match call("POST", &on_path, Some(json!({})), &request_id) {
            Err(_) => {
                self.status[t] = vec![off_status, "active"];
                false
            }
            Ok((200, v)) if v["id"] == id.as_str() && v["status"] == "active" => {
                let action = if on == "resume" {
                    "tenant.resume"
                } else {
                    "tenant.restore"
                };
                self.audited.push((id.clone(), request_id, action));
                self.status[t] = vec!["active"];
                shared.set_disturbed(t, false);
                true
            }
            Ok((s, v)) => {
                failures.push(format!("tenant {id}: {on} answered {s}: {v}"));
                false
            }
        }
    }

    fn request_id(&mut self) -> String {
        self.requests += 1;
        format!("operator-r{}", self.requests)
    }

    /// Changes the tenant's display name, limits (none that would refuse the clients'
    /// operations) and scheduling weight, and checks the answer shows them.
    fn update(
        &mut self,
        t: usize,
        rng: &mut Rng,
        failures: &Failures,
        call: &impl Fn(&str, &str, Option<Value>, &str) -> Result<(u16, Value), String>,
    ) -> bool {
        let id = tenant_id(t);
        let n = rng.below(1000) as u64;
        let limits = json!({
            "max_vectors": 100_000 + n,
            "max_storage_bytes": (1u64 << 30) + n,
            "max_collections": 10 + n % 5,
            "max_spreading_depth": 1 + n % 4,
        });
        let body = json!({
            "display_name": format!("chaos tenant {t} v{n}"),
            "limits": limits,
            "weight": 1 + n % 4,
        });
        let request_id = self.request_id();
        let path = format!("/v1/admin/tenants/{id}");
        let answer = call("PATCH", &path, Some(body.clone()), &request_id);
        let mut wanted = body;
        // The limits the patch leaves out are unset (`null`), as the answer shows them.
        wanted["limits"]["max_qps"] = Value::Null;
        wanted["limits"]["burst"] = Value::Null;
        wanted["limits"]["max_concurrent"] = Value::Null;
        match answer {
            Err(_) => {
                let before = self.profile[t].last().cloned().unwrap_or(Value::Null);
                self.profile[t] = vec![before, wanted];
                false
            }
            Ok((200, v)) if profile_of(&v) == wanted => {
                *self.acknowledged.entry("update").or_default() += 1;
                self.audited.push((id, request_id, "tenant.update"));
                self.profile[t] = vec![wanted];
                true
            }
            // Refused while the tenant's data moves: nothing changed.
            Ok((409, _)) => true,
            Ok((s, v)) => {
                failures.push(format!("tenant {id}: update to {wanted} answered {s}: {v}"));
                false
            }
        }
    }

    fn migrate(
        &mut self,
        t: usize,
        rng: &mut Rng,
        shared: &Shared,
        failures: &Failures,
        call: &impl Fn(&str, &str, Option<Value>, &str) -> Result<(u16, Value), String>,
    ) -> bool {
        let id = tenant_id(t);
        let [current] = self.level[t].as_slice() else {
            return true;
        };
        let current = current.clone();
        let others: Vec<&str> = LEVELS.iter().copied().filter(|l| *l != current).collect();
        let target = rng.pick(&others).to_string();
        let path = format!("/v1/admin/tenants/{id}/migrate");
        let request_id = self.request_id();
        let answer = call(
            "POST",
            &path,
            Some(json!({ "target": target })),
            &request_id,
        );
        let moving_answer = if current == "dedicated" || target == "dedicated" {
            202
        } else {
            200
        };
        // Kept in the test's output, which a failure shows: the story of each level.
        eprintln!("operator: migrate {id} {current} -> {target}: {answer:?}");
        match answer {
            Err(_) => {
                self.level[t] = vec![current, target];
                false
            }
            // `202` exactly when data moves (to or from `dedicated`): the move runs on.
            Ok((s, v))
                if s == moving_answer && v["from"] == current.as_str() && v["to"] == target =>
            {
                *self.acknowledged.entry("migrate").or_default() += 1;
                self.level[t] = vec![target];
                shared.migrations.fetch_add(1, Ordering::SeqCst);
                true
            }
            // Another move of the tenant is still under way.
            Ok((409, _)) => true,
            Ok((s, v)) => {
                failures.push(format!(
                    "tenant {id}: migrate to {target} answered {s}: {v}"
                ));
                false
            }
        }
    }
}

/// A tenant's export, line by line.
pub fn export(
    http: &reqwest::blocking::Client,
    url: &str,
    id: &str,
) -> Result<(u16, Vec<Value>), String> {
    let res = http
        .get(format!("{url}/v1/admin/tenants/{id}/export"))
        .bearer_auth(OPERATOR_KEY)
        .send()
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let text = res.text().map_err(|e| e.to_string())?;
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    Ok((status, lines))
}

/// What [`OperatorModel::update`] sets, as a tenant's answer shows it.
pub fn profile_of(info: &Value) -> Value {
    json!({
        "display_name": info["display_name"],
        "limits": info["limits"],
        "weight": info["weight"],
    })
}

/// A tenant's profile as created by the test: no name, no limits, the default weight.
fn initial_profile() -> Value {
    json!({
        "display_name": null,
        "limits": {
            "max_vectors": null,
            "max_storage_bytes": null,
            "max_collections": null,
            "max_qps": null,
            "burst": null,
            "max_concurrent": null,
            "max_spreading_depth": null,
        },
        "weight": 1,
    })
}
