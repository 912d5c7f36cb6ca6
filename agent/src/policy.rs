//! The restricted API: every request is checked against a Rego policy (package
//! `agent_policy`, one rule per request message name, input = the request as JSON).
//!
//! The policy is parsed and compiled once; each evaluation works on a clone of the compiled
//! engine so that requests never re-parse Rego and never see each other's input.

use std::sync::RwLock;

use protobuf::MessageFull;

/// The default policy of a confidential pod (see `policies/confidential.rego`).
pub const CONFIDENTIAL_POLICY: &str = include_str!("../policies/confidential.rego");
/// Development policy that allows everything; only used when chosen explicitly.
pub const ALLOW_ALL_POLICY: &str = include_str!("../policies/allow-all.rego");

/// Why a request was refused or a policy could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy denied {rule}")]
    Denied { rule: String },
    #[error("policy evaluation of {rule} failed (request denied): {reason}")]
    Evaluation { rule: String, reason: String },
    #[error("invalid policy: {0}")]
    Invalid(String),
    #[error("cannot encode {rule} as policy input: {reason}")]
    Input { rule: String, reason: String },
}

/// A compiled policy, shared by all connections.
#[derive(Debug)]
pub struct Policy {
    engine: RwLock<regorus::Engine>,
}

impl Policy {
    /// Compiles `rego` (Rego v1 syntax, or v0 as produced by Kata's genpolicy).
    pub fn new(rego: &str) -> Result<Self, PolicyError> {
        Ok(Self {
            engine: RwLock::new(compile(rego)?),
        })
    }

    /// The default confidential policy.
    pub fn confidential() -> Result<Self, PolicyError> {
        Self::new(CONFIDENTIAL_POLICY)
    }

    /// Replaces the policy; the old one stays in force if `rego` does not compile.
    pub fn replace(&self, rego: &str) -> Result<(), PolicyError> {
        let engine = compile(rego)?;
        let mut guard = self
            .engine
            .write()
            .map_err(|_| PolicyError::Invalid("policy lock poisoned".into()))?;
        *guard = engine;
        Ok(())
    }

    /// Checks a request message; the rule is the message's protobuf name.
    pub fn check_request<M: MessageFull>(&self, req: &M) -> Result<(), PolicyError> {
        let rule = M::descriptor().name().to_string();
        let opts = protobuf_json_mapping::PrintOptions {
            proto_field_name: true,
            always_output_default_values: true,
            ..Default::default()
        };
        let json =
            protobuf_json_mapping::print_to_string_with_options(req, &opts).map_err(|e| {
                PolicyError::Input {
                    rule: rule.clone(),
                    reason: e.to_string(),
                }
            })?;
        self.check(&rule, &json)
    }

    /// Evaluates `data.agent_policy.<rule>` with `input_json` as input. Anything but a
    /// boolean `true` (undefined rule, error, other value) denies.
    pub fn check(&self, rule: &str, input_json: &str) -> Result<(), PolicyError> {
        let mut engine = self
            .engine
            .read()
            .map_err(|_| PolicyError::Evaluation {
                rule: rule.to_string(),
                reason: "policy lock poisoned".into(),
            })?
            .clone();
        let fail = |reason: String| PolicyError::Evaluation {
            rule: rule.to_string(),
            reason,
        };
        let input = regorus::Value::from_json_str(input_json).map_err(|e| fail(e.to_string()))?;
        engine.set_input(input);
        let value = engine
            .eval_rule(format!("data.agent_policy.{rule}"))
            .map_err(|e| fail(e.to_string()))?;
        if value == regorus::Value::Bool(true) {
            Ok(())
        } else {
            tracing::warn!(rule, "request denied by policy");
            Err(PolicyError::Denied {
                rule: rule.to_string(),
            })
        }
    }
}

fn compile(rego: &str) -> Result<regorus::Engine, PolicyError> {
    let try_parse = |v0: bool| -> Result<regorus::Engine, String> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(v0);
        let pkg = engine
            .add_policy("policy.rego".into(), rego.into())
            .map_err(|e| e.to_string())?;
        if pkg != "data.agent_policy" {
            return Err(format!("package must be agent_policy, found {pkg}"));
        }
        // Evaluate the whole package once so that semantic errors surface now, not on
        // the first request.
        engine.set_input(regorus::Value::new_object());
        engine
            .eval_query("data.agent_policy".into(), false)
            .map_err(|e| e.to_string())?;
        Ok(engine)
    };
    match try_parse(false) {
        Ok(e) => Ok(e),
        Err(v1_err) => try_parse(true)
            .map_err(|v0_err| PolicyError::Invalid(format!("{v1_err} (as Rego v0: {v0_err})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::agent::{CopyFileRequest, CreateContainerRequest, ExecProcessRequest};
    use crate::protocols::oci::{Hook, Hooks, Spec};

    #[test]
    fn confidential_denies_exec_and_allows_lifecycle() {
        let p = Policy::confidential().unwrap();
        let err = p.check_request(&ExecProcessRequest::new()).unwrap_err();
        assert!(err.to_string().contains("ExecProcessRequest"), "{err}");
        let mut req = CreateContainerRequest::new();
        req.container_id = "c1".into();
        req.OCI = Some(Spec::new()).into();
        p.check_request(&req).unwrap();
    }

    #[test]
    fn confidential_denies_hooks() {
        let p = Policy::confidential().unwrap();
        let mut spec = Spec::new();
        let mut hooks = Hooks::new();
        let mut hook = Hook::new();
        hook.Path = "/bin/evil".into();
        hooks.Prestart.push(hook);
        spec.Hooks = Some(hooks).into();
        let mut req = CreateContainerRequest::new();
        req.OCI = Some(spec).into();
        assert!(matches!(
            p.check_request(&req),
            Err(PolicyError::Denied { .. })
        ));
    }

    #[test]
    fn confidential_copyfile_paths() {
        let p = Policy::confidential().unwrap();
        let mut req = CopyFileRequest::new();
        req.path = "/run/kata-containers/shared/containers/abc123-0f0f-resolv.conf".into();
        p.check_request(&req).unwrap();
        req.path = "/run/kata-containers/shared/containers/../../../etc/passwd".into();
        assert!(p.check_request(&req).is_err());
        req.path = "/etc/resolv.conf".into();
        assert!(p.check_request(&req).is_err());
    }

    #[test]
    fn allow_all_allows_exec_and_set_policy() {
        let p = Policy::new(ALLOW_ALL_POLICY).unwrap();
        p.check_request(&ExecProcessRequest::new()).unwrap();
        p.check("SetPolicyRequest", "{}").unwrap();
    }

    #[test]
    fn undefined_rule_and_bad_policy_fail_closed() {
        let p = Policy::new("package agent_policy\nfoo := 1\n").unwrap();
        assert!(p.check("ExecProcessRequest", "{}").is_err());
        assert!(Policy::new("package other\ndefault x := true\n").is_err());
        assert!(Policy::new("this is not rego").is_err());
        // A failed replace keeps the old policy.
        let p = Policy::confidential().unwrap();
        assert!(p.replace("garbage {").is_err());
        assert!(p.check_request(&ExecProcessRequest::new()).is_err());
        p.replace(ALLOW_ALL_POLICY).unwrap();
        p.check_request(&ExecProcessRequest::new()).unwrap();
    }

    #[test]
    fn rego_v0_policy_is_accepted() {
        let p = Policy::new("package agent_policy\ndefault ExecProcessRequest = false\nExecProcessRequest { input.container_id == \"dbg\" }\n").unwrap();
        p.check("ExecProcessRequest", r#"{"container_id":"dbg"}"#)
            .unwrap();
        assert!(p
            .check("ExecProcessRequest", r#"{"container_id":"app"}"#)
            .is_err());
    }
}
