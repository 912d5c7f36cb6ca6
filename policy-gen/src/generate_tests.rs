use super::*;
use crate::image::write_test_image;
use image_mgmt::registry::Platform;

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

struct Fixture {
    dir: tempfile::TempDir,
    digest: String,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let digest = write_test_image(
            dir.path(),
            &serde_json::json!({"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}),
        );
        Self { dir, digest }
    }

    fn opts(&self) -> Options {
        Options {
            resolver: Resolver::Offline {
                dir: self.dir.path().to_owned(),
                platform: Platform::default(),
            },
            initdata: Settings {
                kbs_url: "https://kbs.example:8080".into(),
                kbs_cert_pem: Some(PEM.into()),
                insecure_registries: vec![],
                image_policy: None,
            },
        }
    }

    /// deploy/confidential-pod.yaml, its image given by digest.
    fn demo_pod(&self) -> String {
        include_str!("../../deploy/confidential-pod.yaml").replace(
            "docker.io/library/busybox:1.36",
            &format!("docker.io/library/busybox:1.36@{}", self.digest),
        )
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn the_demo_pod_is_pinned() {
    let f = Fixture::new();
    let g = block_on(generate(&f.demo_pod(), &f.opts())).unwrap();
    assert_eq!(g.pods.len(), 1);
    let p = &g.pods[0];
    let c = &p.data.containers[0];
    let pinned = format!("docker.io/library/busybox@{}", f.digest);
    assert_eq!(c.name, "app");
    assert_eq!(c.image, pinned);
    assert_eq!(
        c.process.args,
        ["sh", "-c", "cat /etc/os-release && sleep 3600"]
    );
    assert_eq!(c.process.env, ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    assert_eq!(
        (c.process.uid, c.process.gid, c.process.cwd.as_str()),
        (0, 0, "/")
    );
    assert!(c.readonly_root && c.process.no_new_privileges);
    assert_eq!(c.process.capabilities, policy::default_caps().unwrap());
    assert!(c.exec.is_empty() && !p.data.read_logs && c.mounts.is_empty());

    // The manifest carries the pinned image and the initdata of exactly this policy.
    let m = Manifest::parse(&g.manifest).unwrap();
    let w = &m.workloads().unwrap()[0];
    assert_eq!(w.spec.containers[0].image.as_deref(), Some(pinned.as_str()));
    let ann = Initdata::from_annotation(&w.annotations[ANNOTATION]).unwrap();
    assert_eq!(ann, p.initdata);
    assert_eq!(ann.policy(), Some(p.policy.as_str()));
    assert!(p.policy.starts_with(policy::RULES));
    assert!(g
        .warnings
        .iter()
        .any(|w| w.contains("replacing its initdata")));
    // Other fields survive.
    assert!(g.manifest.contains("runtimeClassName: kata-coco-snp"));
    assert!(g.manifest.contains("memory: 256Mi"));
}

#[test]
fn kinds_annotations_probes_and_volumes() {
    let f = Fixture::new();
    let img = format!("reg.example:5000/app@{}", f.digest);
    let text = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  template:
    metadata:
      annotations:
        coco-policy/exec-app: '[["sh", "-c", "date"], ["true"]]'
        coco-policy/read-logs: "true"
    spec:
      runtimeClassName: kata-coco-snp
      initContainers:
      - {{name: init, image: "{img}", command: [/bin/setup]}}
      containers:
      - name: app
        image: "{img}"
        tty: true
        env: [{{name: ROOT, value: /srv}}]
        readinessProbe: {{exec: {{command: [cat, "$(ROOT)/ready"]}}}}
        lifecycle: {{preStop: {{exec: {{command: [sh, -c, "$(ROOT)"]}}}}}}
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes: [{{name: data, emptyDir: {{}}}}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly}}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{{name: job, image: "{img}", args: [run]}}]
"#
    );
    let g = block_on(generate(&text, &f.opts())).unwrap();
    assert_eq!(g.pods.len(), 2);
    let web = &g.pods[0].data;
    assert!(web.read_logs);
    let names: Vec<&str> = web.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["init", "app"]);
    let app = &web.containers[1];
    assert_eq!(
        app.exec,
        [
            vec!["sh", "-c", "date"],
            vec!["true"],
            vec!["cat", "/srv/ready"],
            vec!["sh", "-c", "$(ROOT)"],
        ]
    );
    assert!(web.containers[0].exec.is_empty());
    assert_eq!(app.mounts[0].destination, "/data");
    assert!(web.env_rules.iter().any(|r| r == "^TERM=xterm$"));
    assert!(!web
        .env_rules
        .iter()
        .any(|r| r.contains("JOB_COMPLETION_INDEX")));
    let job = &g.pods[1].data;
    assert_eq!(job.containers[0].process.args, ["run"]);
    assert!(job
        .env_rules
        .iter()
        .any(|r| r.contains("JOB_COMPLETION_INDEX")));
    assert!(g
        .warnings
        .iter()
        .any(|w| w.contains("CronJob/nightly: no runtimeClassName")));
    // Each pod template has its own initdata, written into its own template.
    assert_ne!(g.pods[0].initdata.digest(), g.pods[1].initdata.digest());
    let ws = Manifest::parse(&g.manifest).unwrap().workloads().unwrap();
    for (w, p) in ws.iter().zip(&g.pods) {
        let ann = Initdata::from_annotation(&w.annotations[ANNOTATION]).unwrap();
        assert_eq!(ann.digest(), p.initdata.digest());
    }
}

fn refusal(f: &Fixture, text: &str) -> String {
    block_on(generate(text, &f.opts())).unwrap_err().to_string()
}

#[test]
fn refusals_name_what_to_fix() {
    let f = Fixture::new();
    let pod = |extra: &str, ann: &str| {
        format!(
            "kind: Pod\nmetadata:\n  name: p\n  annotations: {{{ann}}}\nspec:\n  containers:\n  - name: app\n    image: app@{}\n{extra}",
            f.digest
        )
    };
    let e = refusal(&f, &pod("    securityContext: {privileged: true}\n", ""));
    assert!(
        e.contains("Pod/p") && e.contains("\"app\"") && e.contains("privileged"),
        "{e}"
    );
    // Offline, a tag is refused.
    let e = refusal(&f, &f.demo_pod().replace(&format!("@{}", f.digest), ""));
    assert!(
        e.contains("busybox:1.36") && e.contains("needs the digest"),
        "{e}"
    );
    let e = refusal(&f, &pod("", "'coco-policy/exec-other': '[[\"sh\"]]'"));
    assert!(e.contains("no container \"other\""), "{e}");
    let e = refusal(&f, &pod("", "'coco-policy/exec-app': '[\"sh\"]'"));
    assert!(e.contains("JSON list of argv lists"), "{e}");
    let e = refusal(&f, &pod("", "'coco-policy/exec-app': '[[]]'"));
    assert!(e.contains("empty argv"), "{e}");
    let e = refusal(&f, &pod("", "'coco-policy/read-logs': 'yes'"));
    assert!(e.contains("read-logs"), "{e}");
    let e = refusal(&f, "kind: Service\nmetadata: {name: s}\n");
    assert!(e.contains("no Pod"), "{e}");
    let e = refusal(
        &f,
        &pod("    volumeMounts: [{name: h, mountPath: /h}]\n  volumes: [{name: h, hostPath: {path: /}}]\n", ""),
    );
    assert!(e.contains("volume \"h\""), "{e}");
}
