//! Request shapes the Kata shim sends, built here next to the code that parses them,
//! for host-side drivers of the agent (the VM harness, tests, benchmarks).

use crate::protocols::{agent, oci};

/// A CreateContainerRequest as Kata ≥ 3.3 sends it for guest pull: one
/// `image_guest_pull` storage whose metadata names the container type (`sandbox` for
/// the pause container, `container` otherwise) and the image.
pub fn guest_pull_create(
    cid: &str,
    kind: &str,
    image: &str,
    spec: oci::Spec,
) -> agent::CreateContainerRequest {
    let mut st = agent::Storage::new();
    st.driver = "image_guest_pull".into();
    st.source = image.into();
    st.fstype = "overlay".into();
    st.mount_point = format!("/run/kata-containers/{cid}/rootfs");
    st.driver_options = vec![format!(
        "image_guest_pull={}",
        serde_json::json!({"metadata": {
            "io.kubernetes.cri.container-type": kind,
            "io.kubernetes.cri.image-name": image,
        }})
    )];
    let mut r = agent::CreateContainerRequest::new();
    r.container_id = cid.into();
    r.exec_id = cid.into();
    r.storages.push(st);
    r.OCI = Some(spec).into();
    r
}

/// An ExecProcessRequest (`kubectl exec`): `args` with PATH=/bin in `/`, as root.
pub fn exec(cid: &str, exec_id: &str, args: &[&str]) -> agent::ExecProcessRequest {
    let mut p = oci::Process::new();
    p.Args = args.iter().map(|a| a.to_string()).collect();
    p.Env = vec!["PATH=/bin".into()];
    p.Cwd = "/".into();
    p.User = Some(oci::User::new()).into();
    let mut e = agent::ExecProcessRequest::new();
    e.container_id = cid.into();
    e.exec_id = exec_id.into();
    e.process = Some(p).into();
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_pull_storage_carries_the_image_and_the_container_type() {
        let r = guest_pull_create("app", "container", "reg/app:1", oci::Spec::new());
        let st = &r.storages[0];
        assert_eq!(st.driver, "image_guest_pull");
        assert_eq!(st.mount_point, "/run/kata-containers/app/rootfs");
        let meta: serde_json::Value = serde_json::from_str(
            st.driver_options[0]
                .strip_prefix("image_guest_pull=")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            meta["metadata"]["io.kubernetes.cri.image-name"],
            "reg/app:1"
        );
        assert_eq!(
            meta["metadata"]["io.kubernetes.cri.container-type"],
            "container"
        );
        let e = exec("app", "e1", &["/bin/true"]);
        assert_eq!(e.process.Args, ["/bin/true"]);
    }
}
