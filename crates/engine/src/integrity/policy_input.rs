//! A tenant's own integrity policy as an operator gives it (at creation, in a `PATCH`): any
//! field may be left out, and takes the value of the policy in force for the tenant then
//! (its own, else the configuration's), not the built-in default, so that changing one
//! threshold never silently resets the others.

use serde::{Deserialize, Serialize};

use super::IntegrityPolicy;

/// The fields of an [`IntegrityPolicy`], each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrityPolicyInput {
    pub latency_contract_ms: Option<f64>,
    pub queue_wait_contract_ms: Option<f64>,
    pub queue_depth_limit: Option<u32>,
    /// `"inf"`: never entered.
    #[serde(with = "super::threshold::optional")]
    #[schema(schema_with = super::threshold::schema)]
    pub stress_enter: Option<f64>,
    pub stress_exit: Option<f64>,
    /// `"inf"`: never entered.
    #[serde(with = "super::threshold::optional")]
    #[schema(schema_with = super::threshold::schema)]
    pub critical_enter: Option<f64>,
    pub critical_exit: Option<f64>,
    pub consecutive: Option<u32>,
    pub cooldown_ms: Option<u64>,
}

impl IntegrityPolicyInput {
    /// The policy this input makes of `base`, the policy in force: the given fields
    /// replaced, the others kept. Not validated yet (the caller does, naming its field).
    pub fn complete(&self, base: &IntegrityPolicy) -> IntegrityPolicy {
        IntegrityPolicy {
            latency_contract_ms: self.latency_contract_ms.unwrap_or(base.latency_contract_ms),
            queue_wait_contract_ms: self
                .queue_wait_contract_ms
                .unwrap_or(base.queue_wait_contract_ms),
            queue_depth_limit: self.queue_depth_limit.unwrap_or(base.queue_depth_limit),
            stress_enter: self.stress_enter.unwrap_or(base.stress_enter),
            stress_exit: self.stress_exit.unwrap_or(base.stress_exit),
            critical_enter: self.critical_enter.unwrap_or(base.critical_enter),
            critical_exit: self.critical_exit.unwrap_or(base.critical_exit),
            consecutive: self.consecutive.unwrap_or(base.consecutive),
            cooldown_ms: self.cooldown_ms.unwrap_or(base.cooldown_ms),
        }
    }
}

impl From<&IntegrityPolicy> for IntegrityPolicyInput {
    /// Every field given: the input that makes exactly `p`, whatever the base.
    fn from(p: &IntegrityPolicy) -> Self {
        IntegrityPolicyInput {
            latency_contract_ms: Some(p.latency_contract_ms),
            queue_wait_contract_ms: Some(p.queue_wait_contract_ms),
            queue_depth_limit: Some(p.queue_depth_limit),
            stress_enter: Some(p.stress_enter),
            stress_exit: Some(p.stress_exit),
            critical_enter: Some(p.critical_enter),
            critical_exit: Some(p.critical_exit),
            consecutive: Some(p.consecutive),
            cooldown_ms: Some(p.cooldown_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_left_out_keep_the_base_values() {
        let base = IntegrityPolicy {
            latency_contract_ms: 25.0,
            consecutive: 7,
            ..IntegrityPolicy::default()
        };
        let input: IntegrityPolicyInput = serde_json::from_str(r#"{"consecutive": 2}"#).unwrap();
        let p = input.complete(&base);
        assert_eq!(p.consecutive, 2);
        assert_eq!(p.latency_contract_ms, 25.0);
        let whole = IntegrityPolicyInput::from(&base);
        assert_eq!(whole.complete(&IntegrityPolicy::default()), base);
        assert!(serde_json::from_str::<IntegrityPolicyInput>(r#"{"nope": 1}"#).is_err());
    }
}
