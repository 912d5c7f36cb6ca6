//! The restricted API: every request is checked against a Rego policy (package
//! `agent_policy`, one rule per request message name, input = the request as JSON).
//!
//! The input has the shape Kata's agent gives its policy (kata-containers 7c6ba40c
//! `src/agent/src/policy.rs` `is_allowed`: the request serialized to JSON with its protobuf
//! field names, evaluated as `data.agent_policy.<message name>`). Kata's rules find the
//! container an exec targets through state kept in the policy engine (`get_state_container`
//! in `src/tools/genpolicy/rules.rego`); here the agent adds the few facts a rule needs as
//! top-level keys no request message has (docs/WORKLOAD-POLICY.md).
//!
//! The policy is parsed and compiled once; each evaluation works on a clone of the compiled
//! engine so that requests never re-parse Rego and never see each other's input.

use std::sync::RwLock;

use protobuf::MessageFull;

use crate::protocols::{agent, oci};

/// Input key naming the container an ExecProcess or ReadStream request targets (its CRI
/// name; empty if it has none or does not exist).
pub const CONTAINER_NAME_KEY: &str = "coco_container_name";
/// Input key marking the evaluation of CreateContainerRequest on the final spec.
pub const FINAL_KEY: &str = "coco_final";
/// The OCI annotation with a container's name in its pod.
pub const CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";

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
        self.check_request_with(req, &[])
    }

    /// Checks a request message with `extra` top-level keys added to the input.
    pub fn check_request_with<M: MessageFull>(
        &self,
        req: &M,
        extra: &[(&str, regorus::Value)],
    ) -> Result<(), PolicyError> {
        let rule = M::descriptor().name().to_string();
        let input_err = |reason: String| PolicyError::Input {
            rule: rule.clone(),
            reason,
        };
        let opts = protobuf_json_mapping::PrintOptions {
            proto_field_name: true,
            always_output_default_values: true,
            ..Default::default()
        };
        let json = protobuf_json_mapping::print_to_string_with_options(req, &opts)
            .map_err(|e| input_err(e.to_string()))?;
        let mut input =
            regorus::Value::from_json_str(&json).map_err(|e| input_err(e.to_string()))?;
        let obj = input
            .as_object_mut()
            .map_err(|e| input_err(e.to_string()))?;
        for (k, v) in extra {
            obj.insert(regorus::Value::from(*k), v.clone());
        }
        self.check_value(&rule, input)
    }

    /// The second evaluation of a CreateContainerRequest: `req` with `OCI` replaced by
    /// `spec`, the spec runc will be given (image config merged, namespaces and mounts
    /// fixed), marked with [`FINAL_KEY`].
    pub fn check_final_create(
        &self,
        req: &agent::CreateContainerRequest,
        spec: &oci::Spec,
    ) -> Result<(), PolicyError> {
        let mut last = req.clone();
        last.OCI = Some(spec.clone()).into();
        self.check_request_with(&last, &[(FINAL_KEY, regorus::Value::from(true))])
    }

    /// Evaluates `data.agent_policy.<rule>` with `input_json` as input. Anything but a
    /// boolean `true` (undefined rule, error, other value) denies.
    pub fn check(&self, rule: &str, input_json: &str) -> Result<(), PolicyError> {
        let input =
            regorus::Value::from_json_str(input_json).map_err(|e| PolicyError::Evaluation {
                rule: rule.to_string(),
                reason: e.to_string(),
            })?;
        self.check_value(rule, input)
    }

    fn check_value(&self, rule: &str, input: regorus::Value) -> Result<(), PolicyError> {
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
    fn the_contract_s_example_data_compiles_into_the_rules() {
        let doc = include_str!("../../docs/WORKLOAD-POLICY.md");
        let data = doc
            .split("```json\n")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .unwrap();
        let p = Policy::new(&format!("{CONFIDENTIAL_POLICY}\npolicy_data := {data}\n")).unwrap();
        // A container the data does not name is refused; the same rules without data admit it.
        let mut req = CreateContainerRequest::new();
        req.OCI = Some(Spec::new()).into();
        Policy::confidential().unwrap().check_request(&req).unwrap();
        assert!(matches!(
            p.check_request(&req),
            Err(PolicyError::Denied { .. })
        ));
    }

    #[test]
    fn added_keys_reach_the_input() {
        let p = Policy::new(
            "package agent_policy\nExecProcessRequest if input.coco_container_name == \"app\"\nCreateContainerRequest if input.coco_final\n",
        )
        .unwrap();
        let req = ExecProcessRequest::new();
        p.check_request_with(&req, &[(CONTAINER_NAME_KEY, "app".into())])
            .unwrap();
        assert!(p
            .check_request_with(&req, &[(CONTAINER_NAME_KEY, "dbg".into())])
            .is_err());
        assert!(p.check_request(&req).is_err());
        let create = CreateContainerRequest::new();
        assert!(p.check_request(&create).is_err());
        p.check_final_create(&create, &Spec::new()).unwrap();
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
