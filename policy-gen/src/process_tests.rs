use super::*;

fn container(yaml: &str) -> Container {
    serde_yaml::from_str(&format!("name: app\nimage: x\n{yaml}")).unwrap()
}

fn pod_sc(yaml: &str) -> PodSecurityContext {
    serde_yaml::from_str(yaml).unwrap()
}

fn img() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/usr/bin:/bin".into(), "MODE=image".into()],
        entrypoint: vec!["/entry".into()],
        cmd: vec!["--serve".into()],
        working_dir: "/srv".into(),
        user: "1000:2000".into(),
        volumes: vec![],
    }
}

fn caps() -> Vec<String> {
    ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
        .map(String::from)
        .to_vec()
}

fn run(yaml: &str, image: &ImageConfig) -> Result<Computed, String> {
    compute(&container(yaml), None, image, &caps())
}

fn args_of(yaml: &str, image: &ImageConfig) -> Vec<String> {
    run(yaml, image).unwrap().process.args
}

#[test]
fn command_and_args_over_entrypoint_and_cmd() {
    let i = img();
    assert_eq!(args_of("", &i), ["/entry", "--serve"]);
    // command replaces Entrypoint and drops Cmd.
    assert_eq!(args_of("command: [sh, -c, date]", &i), ["sh", "-c", "date"]);
    // args alone replace Cmd only.
    assert_eq!(args_of("args: [--debug]", &i), ["/entry", "--debug"]);
    assert_eq!(
        args_of("command: [/bin/app]\nargs: [a, b]", &i),
        ["/bin/app", "a", "b"]
    );
    // An explicitly empty command is no command.
    assert_eq!(args_of("command: []\nargs: [x]", &i), ["/entry", "x"]);
    // Entrypoint [""] is none.
    let blank = ImageConfig {
        entrypoint: vec![String::new()],
        ..img()
    };
    assert_eq!(args_of("", &blank), ["--serve"]);
    let empty = ImageConfig {
        entrypoint: vec![],
        cmd: vec![],
        ..img()
    };
    assert!(run("", &empty).unwrap_err().contains("no command"));
    assert_eq!(args_of("args: [/bin/true]", &empty), ["/bin/true"]);
}

#[test]
fn variables_expand_like_kubelet() {
    let c = "env:\n- {name: A, value: one}\n- {name: B, value: '$(A)-two'}\n- {name: C, value: '$$(A) $(NOPE) $x $(unclosed'}\n\
             command: [echo, '$(B)', '$$(B)', '$(C)']";
    let r = run(c, &img()).unwrap().process;
    assert_eq!(
        r.args,
        ["echo", "one-two", "$(B)", "$(A) $(NOPE) $x $(unclosed"]
    );
    assert!(r.env.contains(&"B=one-two".to_string()));
    // A later variable is not visible to an earlier one.
    let r = run(
        "env:\n- {name: X, value: '$(Y)'}\n- {name: Y, value: y}",
        &img(),
    )
    .unwrap();
    assert!(r.process.env.contains(&"X=$(Y)".to_string()));
    // A value the cluster fills in cannot be pinned into a pinned argument.
    let secret = "env:\n- name: TOKEN\n  valueFrom:\n    secretKeyRef: {name: s, key: k}\n";
    let e = run(&format!("{secret}command: [app, '$(TOKEN)']"), &img()).unwrap_err();
    assert!(e.contains("TOKEN"), "{e}");
    let e = run(
        &format!("{secret}- {{name: T2, value: 'x$(TOKEN)'}}"),
        &img(),
    )
    .unwrap_err();
    assert!(e.contains("env T2"), "{e}");
}

#[test]
fn env_is_image_env_overridden_by_container_env() {
    let c = "env:\n- {name: MODE, value: prod}\n- {name: EXTRA}\n- name: PATH\n  valueFrom:\n    fieldRef: {fieldPath: metadata.name}\n";
    let r = run(c, &img()).unwrap();
    // Replaced in place, appended, and the runtime-valued PATH is not pinned.
    assert_eq!(r.process.env, ["MODE=prod", "EXTRA="]);
    assert_eq!(r.runtime_env, ["PATH"]);
    let r = run("", &img()).unwrap();
    assert_eq!(r.process.env, img().env);
    assert!(r.runtime_env.is_empty());
    // The last definition of a name wins.
    let r = run(
        "env:\n- {name: A, value: '1'}\n- {name: A, value: '2'}",
        &img(),
    )
    .unwrap();
    assert_eq!(
        r.process.env.iter().filter(|e| e.starts_with("A=")).count(),
        1
    );
    assert!(r.process.env.contains(&"A=2".to_string()));
    let e = run("envFrom:\n- configMapRef: {name: cm}", &img()).unwrap_err();
    assert!(e.contains("envFrom"));
}

#[test]
fn cwd_comes_from_the_container_then_the_image() {
    assert_eq!(run("workingDir: /app", &img()).unwrap().process.cwd, "/app");
    assert_eq!(run("", &img()).unwrap().process.cwd, "/srv");
    let none = ImageConfig {
        working_dir: String::new(),
        ..img()
    };
    assert_eq!(run("", &none).unwrap().process.cwd, "/");
}

#[test]
fn user_from_security_context_or_numeric_image_user() {
    let with_user = |u: &str| ImageConfig {
        user: u.into(),
        ..img()
    };
    let ids = |yaml: &str, image: &ImageConfig, pod: Option<&PodSecurityContext>| {
        compute(&container(yaml), pod, image, &caps()).map(|c| (c.process.uid, c.process.gid))
    };
    assert_eq!(ids("", &with_user("1000:2000"), None), Ok((1000, 2000)));
    assert_eq!(ids("", &with_user("1000"), None), Ok((1000, 0)));
    assert_eq!(ids("", &with_user(""), None), Ok((0, 0)));
    let e = ids("", &with_user("nobody"), None).unwrap_err();
    assert!(e.contains("\"nobody\"") && e.contains("runAsUser"), "{e}");
    assert!(ids("", &with_user("1000:staff"), None).is_err());
    // runAsUser replaces the whole image user; runAsGroup its group.
    let sc = "securityContext: {runAsUser: 5}";
    assert_eq!(ids(sc, &with_user("nobody"), None), Ok((5, 0)));
    assert_eq!(
        ids(
            "securityContext: {runAsGroup: 9}",
            &with_user("1000:staff"),
            None
        ),
        Ok((1000, 9))
    );
    // Container over pod.
    let pod = pod_sc("runAsUser: 3\nrunAsGroup: 4");
    assert_eq!(ids("", &with_user("1000:2000"), Some(&pod)), Ok((3, 4)));
    assert_eq!(ids(sc, &with_user(""), Some(&pod)), Ok((5, 4)));
    assert!(ids("securityContext: {runAsUser: -1}", &img(), None).is_err());
    // runAsNonRoot with root is what kubelet would refuse to start.
    let e = ids(
        "securityContext: {runAsNonRoot: true}",
        &with_user(""),
        None,
    )
    .unwrap_err();
    assert!(e.contains("runAsNonRoot"));
    assert!(ids("securityContext: {runAsNonRoot: true}", &img(), None).is_ok());
}

#[test]
fn additional_gids_hold_gid_supplemental_groups_and_fs_group() {
    let pod = pod_sc("runAsGroup: 4\nsupplementalGroups: [10, 4, 11]\nfsGroup: 12");
    let p = compute(&container(""), Some(&pod), &img(), &caps())
        .unwrap()
        .process;
    assert_eq!(p.gid, 4);
    assert_eq!(p.additional_gids, [4, 10, 11, 12]);
    assert_eq!(run("", &img()).unwrap().process.additional_gids, [2000]);
}

#[test]
fn capabilities_are_the_default_set_adjusted() {
    let set = |yaml: &str| {
        let mut v = run(yaml, &img()).map(|c| c.process.capabilities)?;
        v.sort();
        Ok::<_, String>(v)
    };
    assert_eq!(set(""), Ok(caps()));
    assert_eq!(
        set("securityContext:\n  capabilities: {drop: [ALL], add: [net_bind_service]}"),
        Ok(vec!["CAP_NET_BIND_SERVICE".into()])
    );
    assert_eq!(
        set("securityContext:\n  capabilities: {drop: [KILL]}"),
        Ok(vec!["CAP_CHOWN".into(), "CAP_NET_BIND_SERVICE".into()])
    );
    // Both added and dropped: dropped.
    assert_eq!(
        set("securityContext:\n  capabilities: {add: [SYS_TIME], drop: [SYS_TIME, all]}"),
        Ok(vec![])
    );
    let r = run(
        "securityContext:\n  capabilities: {add: [NET_ADMIN]}",
        &img(),
    )
    .unwrap();
    assert!(r
        .process
        .capabilities
        .contains(&"CAP_NET_ADMIN".to_string()));
    assert_eq!(r.extra_caps, ["CAP_NET_ADMIN"]);
    assert!(set("securityContext:\n  capabilities: {add: [ALL]}").is_err());
    assert!(
        set("securityContext:\n  capabilities: {add: [CAP_NET_ADMIN]}")
            .unwrap_err()
            .contains("CAP_ prefix")
    );
    assert!(set("securityContext:\n  capabilities: {drop: ['x y']}").is_err());
}

#[test]
fn privileged_is_refused_and_flags_follow_the_spec() {
    let e = run("securityContext: {privileged: true}", &img()).unwrap_err();
    assert!(e.contains("privileged"));
    assert!(run("securityContext: {privileged: false}", &img()).is_ok());
    let p = run(
        "tty: true\nsecurityContext: {allowPrivilegeEscalation: false}",
        &img(),
    )
    .unwrap()
    .process;
    assert!(p.terminal && p.no_new_privileges);
    let p = run("", &img()).unwrap().process;
    assert!(!p.terminal && !p.no_new_privileges);
}
