//! The generated policy: the agent's shipped rules, byte for byte, plus one
//! `policy_data` object (docs/WORKLOAD-POLICY.md). The rules are compiled in, so a
//! generator always emits the rules of the agent it was built with.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::mounts::MountRule;
use crate::process::Process;

/// agent/policies/confidential.rego (`coco_agent::policy::CONFIDENTIAL_POLICY`).
pub const RULES: &str = include_str!("../../agent/policies/confidential.rego");

/// `policy_data` version this generator writes.
pub const VERSION: u32 = 1;

/// `policy_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyData {
    pub version: u32,
    pub containers: Vec<ContainerPolicy>,
    pub env_rules: Vec<String>,
    pub read_logs: bool,
}

/// `policy_data.containers[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerPolicy {
    pub name: String,
    pub image: String,
    pub process: Process,
    pub readonly_root: bool,
    pub mounts: Vec<MountRule>,
    pub exec: Vec<Vec<String>>,
}

fn engine(text: &str) -> Result<regorus::Engine> {
    let mut e = regorus::Engine::new();
    e.set_rego_v0(false);
    let pkg = e
        .add_policy("policy.rego".into(), text.into())
        .map_err(|err| Error::Rules(err.to_string()))?;
    if pkg != "data.agent_policy" {
        return Err(Error::Rules(format!(
            "package must be agent_policy, found {pkg}"
        )));
    }
    Ok(e)
}

fn eval_json(e: &mut regorus::Engine, rule: &str) -> Result<serde_json::Value> {
    let v = e
        .eval_rule(rule.into())
        .map_err(|err| Error::Rules(format!("{rule}: {err}")))?;
    let s = v
        .to_json_str()
        .map_err(|err| Error::Rules(format!("{rule}: {err}")))?;
    serde_json::from_str(&s).map_err(|err| Error::Rules(format!("{rule}: {err}")))
}

/// containerd's default capabilities, as the rules define them (`default_caps`), so
/// the generator and the rules cannot disagree on the set.
pub fn default_caps() -> Result<Vec<String>> {
    let mut e = engine(RULES)?;
    let v = eval_json(&mut e, "data.agent_policy.default_caps")?;
    let caps: Vec<String> = serde_json::from_value(v)
        .map_err(|err| Error::Rules(format!("default_caps is not a set of names: {err}")))?;
    if caps.is_empty() {
        return Err(Error::Rules("default_caps is empty".into()));
    }
    Ok(caps)
}

/// The policy text: the rules, then `policy_data := <JSON>` (JSON is Rego).
pub fn render(data: &PolicyData) -> Result<String> {
    let json = serde_json::to_string_pretty(data)
        .map_err(|e| Error::Rules(format!("encoding policy_data: {e}")))?;
    let mut out = String::with_capacity(RULES.len() + json.len() + 32);
    out.push_str(RULES);
    out.push_str("\npolicy_data := ");
    out.push_str(&json);
    out.push('\n');
    Ok(out)
}

/// Compiles `text` as the agent does, evaluates the whole package, and checks that
/// it reads back `data` as its `policy_data`: a policy the agent would refuse, or
/// that says something else than intended, is never written.
pub fn verify(text: &str, data: &PolicyData) -> Result<()> {
    let mut e = engine(text)?;
    e.set_input(regorus::Value::new_object());
    e.eval_query("data.agent_policy".into(), false)
        .map_err(|err| Error::Rules(format!("evaluating the package: {err}")))?;
    let got = eval_json(&mut e, "data.agent_policy.policy_data")?;
    let want = serde_json::to_value(data)
        .map_err(|err| Error::Rules(format!("encoding policy_data: {err}")))?;
    if got != want {
        return Err(Error::Rules(
            "policy_data does not read back as written".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_come_from_the_rules() {
        let caps = default_caps().unwrap();
        assert_eq!(caps.len(), 14);
        for c in [
            "CAP_CHOWN",
            "CAP_NET_BIND_SERVICE",
            "CAP_AUDIT_WRITE",
            "CAP_KILL",
        ] {
            assert!(caps.contains(&c.to_string()), "{c}");
        }
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    fn data() -> PolicyData {
        PolicyData {
            version: VERSION,
            containers: vec![ContainerPolicy {
                name: "app".into(),
                image: format!("reg.example/app@sha256:{}", "1".repeat(64)),
                process: Process {
                    args: vec!["sh".into(), "-c".into(), "echo \"$X\" `q` \\".into()],
                    env: vec!["PATH=/bin".into()],
                    cwd: "/".into(),
                    uid: 0,
                    gid: 0,
                    additional_gids: vec![0],
                    capabilities: default_caps().unwrap(),
                    no_new_privileges: true,
                    terminal: false,
                },
                readonly_root: true,
                mounts: vec![],
                exec: vec![vec!["date".into()]],
            }],
            env_rules: vec![r"^HOSTNAME=[a-z\.]+$".into()],
            read_logs: false,
        }
    }

    #[test]
    fn rendered_policy_is_the_rules_plus_data() {
        let d = data();
        let text = render(&d).unwrap();
        assert!(text.starts_with(RULES));
        assert!(text[RULES.len()..].starts_with("\npolicy_data := {"));
        verify(&text, &d).unwrap();
        // Another policy_data than the one meant is caught.
        let mut other = d.clone();
        other.read_logs = true;
        assert!(verify(&text, &other).is_err());
        assert!(verify(&text.replace("package agent_policy", "package other"), &d).is_err());
        assert!(verify(&format!("{text}\nbroken :=\n"), &d).is_err());
    }
}
