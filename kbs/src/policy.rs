//! Rego policies, compiled once and evaluated many times.
//!
//! Parsing happens when a policy is set (which also validates it, so a broken
//! policy is refused at upload, not discovered at the next attestation). Each
//! evaluation clones the prepared engine: no re-parse per request.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The reference-value lookup function attestation policies may call.
pub const QUERY_REFERENCE_VALUE: &str = "query_reference_value";

/// A hostile or buggy policy cannot stall the KBS for longer than this.
const EVAL_TIME_LIMIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy does not compile: {0}")]
    Compile(String),
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    #[error("policy rule `{rule}` gave {got}, expected {expected}")]
    Result {
        rule: &'static str,
        got: String,
        expected: &'static str,
    },
}

/// A set of Rego modules plus a data document, ready to evaluate.
#[derive(Clone)]
pub struct CompiledPolicy {
    engine: Arc<regorus::Engine>,
    /// The sources, for reading the policy back.
    sources: Arc<Vec<(String, String)>>,
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field(
                "modules",
                &self.sources.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CompiledPolicy {
    /// Compile `modules` (name, source) with `data` as the data document.
    pub fn compile(
        modules: &[(String, String)],
        data: &serde_json::Value,
    ) -> Result<Self, PolicyError> {
        Self::compile_with_reference(modules, data, None)
    }

    /// As [`Self::compile`], and with the built-in `query_reference_value(id)`
    /// that Trustee's attestation policies call (`attestation-service/src/
    /// ear_token/broker.rs` @78962cd): the registered value of `id` exactly as
    /// it was registered, or `null` when there is none.
    pub fn compile_with_reference(
        modules: &[(String, String)],
        data: &serde_json::Value,
        reference: Option<Arc<std::collections::BTreeMap<String, serde_json::Value>>>,
    ) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        if let Some(values) = reference {
            engine
                .add_extension(
                    QUERY_REFERENCE_VALUE.to_owned(),
                    1,
                    Box::new(move |args: Vec<regorus::Value>| {
                        let id =
                            args.first()
                                .and_then(|a| a.as_string().ok())
                                .ok_or_else(|| {
                                    anyhow::anyhow!("{QUERY_REFERENCE_VALUE} takes one string")
                                })?;
                        match values.get(id.as_ref()) {
                            Some(v) => Ok(regorus::Value::from_json_str(&v.to_string())?),
                            None => Ok(regorus::Value::Null),
                        }
                    }),
                )
                .map_err(|e| PolicyError::Compile(e.to_string()))?;
        }
        if let Some(check_interval) = NonZeroU32::new(1000) {
            engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit: EVAL_TIME_LIMIT,
                check_interval,
            });
        }
        for (name, src) in modules {
            engine
                .add_policy(name.clone(), src.clone())
                .map_err(|e| PolicyError::Compile(e.to_string()))?;
        }
        let data = regorus::Value::from_json_str(&data.to_string())
            .map_err(|e| PolicyError::Compile(e.to_string()))?;
        engine
            .add_data(data)
            .map_err(|e| PolicyError::Compile(e.to_string()))?;
        Ok(Self {
            engine: Arc::new(engine),
            sources: Arc::new(modules.to_vec()),
        })
    }

    pub fn sources(&self) -> &[(String, String)] {
        &self.sources
    }

    /// Evaluate `rule` (e.g. `data.policy.allow`) with `input`; `extra_data` is
    /// merged into the data document for this evaluation only (its keys must
    /// not collide with the compiled data).
    pub fn eval(
        &self,
        rule: &str,
        input: &serde_json::Value,
        extra_data: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, PolicyError> {
        let mut engine = (*self.engine).clone();
        let input = regorus::Value::from_json_str(&input.to_string())
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        engine.set_input(input);
        if let Some(d) = extra_data {
            let d = regorus::Value::from_json_str(&d.to_string())
                .map_err(|e| PolicyError::Eval(e.to_string()))?;
            engine
                .add_data(d)
                .map_err(|e| PolicyError::Eval(e.to_string()))?;
        }
        let v = engine
            .eval_rule(rule.to_owned())
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        serde_json::to_value(&v).map_err(|e| PolicyError::Eval(e.to_string()))
    }

    /// Evaluate a boolean rule; anything but `true` is `false` (fail closed).
    pub fn allows(
        &self,
        rule: &'static str,
        input: &serde_json::Value,
        extra_data: Option<&serde_json::Value>,
    ) -> Result<bool, PolicyError> {
        match self.eval(rule, input, extra_data)? {
            serde_json::Value::Bool(b) => Ok(b),
            other => Err(PolicyError::Result {
                rule,
                got: other.to_string(),
                expected: "a boolean",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiles_once_evaluates_many() {
        let p = CompiledPolicy::compile(
            &[(
                "p.rego".into(),
                "package policy\ndefault allow := false\nallow if { input.x == data.want }\nallow if { input.x == data.also }".into(),
            )],
            &json!({"want": 3}),
        )
        .unwrap();
        assert!(p
            .allows("data.policy.allow", &json!({"x": 3}), None)
            .unwrap());
        assert!(!p
            .allows("data.policy.allow", &json!({"x": 4}), None)
            .unwrap());
        assert!(p
            .allows(
                "data.policy.allow",
                &json!({"x": 4}),
                Some(&json!({"also": 4}))
            )
            .unwrap());
    }

    #[test]
    fn broken_policy_is_refused_at_compile_time() {
        let err = CompiledPolicy::compile(
            &[("p.rego".into(), "package policy\nallow if {".into())],
            &json!({}),
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::Compile(_)));
    }

    #[test]
    fn non_boolean_allow_fails_closed() {
        let p = CompiledPolicy::compile(
            &[("p.rego".into(), "package policy\nallow := \"yes\"".into())],
            &json!({}),
        )
        .unwrap();
        assert!(p.allows("data.policy.allow", &json!({}), None).is_err());
    }
}
