//! The operator thread: suspends and resumes, soft-deletes and restores, migrates between
//! isolation levels, exports and creates tenants, remembering what each acknowledged answer
//! promised.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::OPERATOR_KEY;
use crate::model::{Failures, Rng, Shared, TENANTS, http, send, tenant_id};

pub const LEVELS: [&str; 3] = ["shared", "partition", "dedicated"];

pub struct OperatorModel {
    /// Per tenant, the statuses its operations allow after a restart: one when the last
    /// operation was answered, two when its answer never arrived.
    pub status: Vec<Vec<&'static str>>,
    /// Likewise, the isolation levels.
    pub level: Vec<Vec<String>>,
    /// Tenants whose creation was answered `201`.
    pub created: Vec<String>,
    /// Acknowledged operations of the current round, by kind.
    pub acknowledged: BTreeMap<&'static str, usize>,
    made: usize,
}

impl OperatorModel {
    pub fn new() -> OperatorModel {
        OperatorModel {
            status: vec![vec!["active"]; TENANTS],
            level: vec![vec!["shared".to_owned()]; TENANTS],
            created: Vec::new(),
            acknowledged: BTreeMap::new(),
            made: 0,
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
        let http = http();
        let call = |method: &str, path: &str, body: Option<Value>| {
            send(
                &http,
                method,
                &format!("{url}{path}"),
                OPERATOR_KEY,
                body.as_ref(),
            )
        };
        while !stop.load(Ordering::SeqCst) {
            let t = rng.below(TENANTS);
            let id = tenant_id(t);
            let going_on = match rng.below(6) {
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
                4 => match export(&http, url, &id) {
                    Err(_) => false,
                    Ok((200, lines)) => {
                        *self.acknowledged.entry("export").or_default() += 1;
                        if let Some(bad) = lines.iter().find(|l| l["type"].as_str().is_none()) {
                            failures.push(format!("tenant {id}: export line {bad}"));
                        }
                        true
                    }
                    // Refused while the tenant moves or is deleted: nothing to check.
                    Ok((409 | 404 | 503, _)) => true,
                    Ok((s, _)) => {
                        failures.push(format!("tenant {id}: export answered {s}"));
                        false
                    }
                },
                _ => {
                    let new = format!("chaosx{round}n{}", self.made);
                    self.made += 1;
                    match call("POST", "/v1/admin/tenants", Some(json!({ "id": new }))) {
                        Err(_) => false,
                        Ok((201, _)) => {
                            *self.acknowledged.entry("create").or_default() += 1;
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
        call: &impl Fn(&str, &str, Option<Value>) -> Result<(u16, Value), String>,
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
        match call(off_req.0, &off_req.1, Some(json!({}))) {
            Err(_) => {
                self.status[t] = vec!["active", off_status];
                return false;
            }
            Ok((s, _)) if (200..300).contains(&s) => {
                *self.acknowledged.entry(off_status).or_default() += 1;
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
        match call("POST", &on_path, Some(json!({}))) {
            Err(_) => {
                self.status[t] = vec![off_status, "active"];
                false
            }
            Ok((s, _)) if (200..300).contains(&s) => {
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

    fn migrate(
        &mut self,
        t: usize,
        rng: &mut Rng,
        shared: &Shared,
        failures: &Failures,
        call: &impl Fn(&str, &str, Option<Value>) -> Result<(u16, Value), String>,
    ) -> bool {
        let id = tenant_id(t);
        let [current] = self.level[t].as_slice() else {
            return true;
        };
        let current = current.clone();
        let others: Vec<&str> = LEVELS.iter().copied().filter(|l| *l != current).collect();
        let target = rng.pick(&others).to_string();
        let path = format!("/v1/admin/tenants/{id}/migrate");
        let answer = call("POST", &path, Some(json!({ "target": target })));
        // Kept in the test's output, which a failure shows: the story of each level.
        eprintln!("operator: migrate {id} {current} -> {target}: {answer:?}");
        match answer {
            Err(_) => {
                self.level[t] = vec![current, target];
                false
            }
            Ok((s, _)) if (200..300).contains(&s) => {
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
