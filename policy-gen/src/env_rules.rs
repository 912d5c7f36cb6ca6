//! `policy_data.env_rules`: the variables the cluster adds to every container besides
//! the ones the policy pins, as anchored regexes over `NAME=value`.
//!
//! The set is the one Kata's genpolicy allows, `request_defaults.CreateContainerRequest.
//! allow_env_regex` in src/tools/genpolicy/genpolicy-settings.json @7c6ba40c
//! (kata-containers), with its `$(...)` placeholders written out: HOSTNAME, the
//! service links kubelet injects for every service of the namespace (which include
//! KUBERNETES_SERVICE_HOST, KUBERNETES_PORT_443_TCP, ...), JOB_COMPLETION_INDEX of
//! indexed Jobs and containerd's TERM for a tty. Its AZURE_* entries belong to one
//! cloud's workload identity and are left out.

/// A service name as an environment variable prefix (genpolicy `svc_name_downward_env`).
const SVC: &str = "[A-Z](?:[A-Z0-9_]{0,61}[A-Z0-9])?";
/// A port (`ip_p`).
const PORT: &str = "[0-9]{1,5}";
/// A dotted IPv4 address (`ipv4_a`).
const IPV4: &str = r"(([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])\.){3}([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])";
/// A hostname or port name (`dns_label`).
const DNS_LABEL: &str = r"[a-zA-Z0-9_\.\-]+";

/// What decides which optional rules a pod needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// A Job or CronJob (indexed Jobs get JOB_COMPLETION_INDEX).
    pub job: bool,
    /// A container with a tty (containerd sets TERM=xterm).
    pub tty: bool,
}

/// The rules for a pod; `runtime_env` are variables of the pod whose values the
/// cluster supplies (`valueFrom`): any single-line value is allowed for those names.
pub fn env_rules(needs: Needs, runtime_env: &[String]) -> Vec<String> {
    let mut r = vec![
        format!("^HOSTNAME={DNS_LABEL}$"),
        format!("^{SVC}_PORT_{PORT}_(TCP|UDP)=(tcp|udp)://{IPV4}:{PORT}$"),
        format!("^{SVC}_PORT_{PORT}_(TCP|UDP)_PROTO=(tcp|udp)$"),
        format!("^{SVC}_PORT_{PORT}_(TCP|UDP)_PORT={PORT}$"),
        format!("^{SVC}_PORT_{PORT}_(TCP|UDP)_ADDR={IPV4}$"),
        format!("^{SVC}_SERVICE_HOST={IPV4}$"),
        format!("^{SVC}_SERVICE_PORT={PORT}$"),
        format!("^{SVC}_SERVICE_PORT_{DNS_LABEL}={PORT}$"),
        format!("^{SVC}_PORT=(tcp|udp)://{IPV4}:{PORT}$"),
    ];
    if needs.job {
        r.push("^JOB_COMPLETION_INDEX=[0-9]+$".into());
    }
    if needs.tty {
        r.push("^TERM=xterm$".into());
    }
    let mut names: Vec<&String> = runtime_env.iter().collect();
    names.sort();
    names.dedup();
    for n in names {
        r.push(format!("^{}=.*$", regex::escape(n)));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(rules: &[String], entry: &str) -> bool {
        rules
            .iter()
            .any(|r| regex::Regex::new(r).unwrap().is_match(entry))
    }

    #[test]
    fn the_clusters_variables_pass_and_others_do_not() {
        let rules = env_rules(Needs::default(), &[]);
        for ok in [
            "HOSTNAME=web-7d9f8c-x2k4q",
            "KUBERNETES_SERVICE_HOST=10.96.0.1",
            "KUBERNETES_SERVICE_PORT=443",
            "KUBERNETES_SERVICE_PORT_HTTPS=443",
            "KUBERNETES_PORT=tcp://10.96.0.1:443",
            "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
            "KUBERNETES_PORT_443_TCP_PROTO=tcp",
            "KUBERNETES_PORT_443_TCP_PORT=443",
            "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
            "MY_DB_SERVICE_HOST=10.0.0.12",
        ] {
            assert!(admits(&rules, ok), "{ok}");
        }
        for bad in [
            "LD_PRELOAD=/tmp/x.so",
            "PATH=/tmp",
            "HOSTNAME=a b",
            "KUBERNETES_SERVICE_HOST=10.96.0.1; rm -rf /",
            "KUBERNETES_SERVICE_HOST=300.1.1.1",
            "JOB_COMPLETION_INDEX=1",
            "TERM=xterm",
            "TOKEN=abc",
        ] {
            assert!(!admits(&rules, bad), "{bad}");
        }
        let rules = env_rules(
            Needs {
                job: true,
                tty: true,
            },
            &["TOKEN".into(), "A.B".into(), "TOKEN".into()],
        );
        assert!(admits(&rules, "JOB_COMPLETION_INDEX=3"));
        assert!(admits(&rules, "TERM=xterm"));
        assert!(admits(&rules, "TOKEN=any value"));
        assert!(admits(&rules, "A.B=x"));
        assert!(!admits(&rules, "AxB=x"), "names are escaped");
        assert!(!admits(&rules, "TOKEN=two\nlines"));
        assert_eq!(rules.iter().filter(|r| r.starts_with("^TOKEN")).count(), 1);
    }
}
