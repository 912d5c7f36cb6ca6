//! The Rego shipped in deploy/ compiles with the engine the agent and the KBS use
//! (regorus) and decides what its comments say.

#![allow(clippy::unwrap_used, clippy::expect_used)]

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy_tests::repo_root().join(rel)).unwrap()
}

fn eval_bool(policy: &str, rule: &str, input: &str) -> bool {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("policy.rego".to_string(), policy.to_string())
        .unwrap();
    engine.set_input(regorus::Value::from_json_str(input).unwrap());
    engine.eval_rule(rule.to_string()).unwrap() == regorus::Value::from(true)
}

#[test]
fn the_pod_agent_policy_forbids_exec_and_allows_create() {
    let doc: toml::Table = read("deploy/initdata.toml").parse().unwrap();
    let policy = doc["data"]["policy.rego"].as_str().unwrap();
    assert!(eval_bool(
        policy,
        "data.agent_policy.CreateContainerRequest",
        "{}"
    ));
    assert!(!eval_bool(
        policy,
        "data.agent_policy.ExecProcessRequest",
        "{}"
    ));
    assert!(!eval_bool(
        policy,
        "data.agent_policy.SetPolicyRequest",
        "{}"
    ));
}

#[test]
fn the_default_kbs_policy_releases_only_to_affirmed_hardware() {
    let policy = read("deploy/kbs/default-policy.rego");
    let input = |tee: &str, status: &str| {
        format!(r#"{{"tee":"{tee}","submods":{{"cpu0":{{"ear.status":"{status}"}}}}}}"#)
    };
    assert!(eval_bool(
        &policy,
        "data.policy.allow",
        &input("snp", "affirming")
    ));
    assert!(!eval_bool(
        &policy,
        "data.policy.allow",
        &input("snp", "contraindicated")
    ));
    assert!(!eval_bool(
        &policy,
        "data.policy.allow",
        &input("sample", "affirming")
    ));
    assert!(!eval_bool(&policy, "data.policy.allow", "{}"));
}
