//! Signature policy in the containers-policy.json(5) format.
//!
//! Supported requirement types: `insecureAcceptAnything`, `reject`,
//! `sigstoreSigned` with a public key (`keyPath`, `keyPaths` or `keyData`),
//! and this project's extension `encryptedLayers`: every layer of the image
//! must be ocicrypt-encrypted. Anything else (GPG `signedBy`, Fulcio, Rekor)
//! is refused when the policy is loaded: an unknown rule must never silently
//! allow an image.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use oci_client::Reference;
use serde::Deserialize;

use crate::cosign;
use crate::error::{Error, IoContext, Result};
use crate::ocicrypt::split_encrypted;
use crate::registry::{Registry, ResolvedManifest};

/// How a signature's claimed identity must relate to the pulled reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference(String),
    ExactRepository(String),
}

/// One requirement; all requirements of the matching scope must hold.
#[derive(Debug, Clone)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    SigstoreSigned {
        keys: Vec<p256::ecdsa::VerifyingKey>,
        identity: SignedIdentity,
    },
    /// Every layer is encrypted. Keys are released only to the attested pod,
    /// but the manifest is the registry's: without this, a plain layer added
    /// next to the encrypted ones would be unpacked on top of them.
    EncryptedLayers,
}

/// A parsed, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    default: Vec<Requirement>,
    docker: BTreeMap<String, Vec<Requirement>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Vec<RawReq>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<RawReq>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReq {
    #[serde(rename = "type")]
    kind: String,
    key_path: Option<String>,
    key_paths: Option<Vec<String>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
    signed_identity: Option<RawIdentity>,
    fulcio: Option<serde_json::Value>,
    rekor_public_key_path: Option<String>,
    rekor_public_key_data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIdentity {
    #[serde(rename = "type")]
    kind: String,
    docker_reference: Option<String>,
    docker_repository: Option<String>,
}

impl Policy {
    /// Loads a policy file. Relative `keyPath`s are resolved against the
    /// policy file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).ctx(|| format!("reading policy {}", path.display()))?;
        Self::parse(&data, path.parent())
    }

    /// Parses policy JSON. Relative `keyPath`s are resolved against `base`;
    /// without one they are refused.
    pub fn parse(data: &[u8], base: Option<&Path>) -> Result<Self> {
        let raw: RawPolicy =
            serde_json::from_slice(data).map_err(|e| Error::Policy(format!("policy JSON: {e}")))?;
        let default = convert_list(raw.default, base, "default")?;
        let mut docker = BTreeMap::new();
        for (transport, scopes) in raw.transports {
            if transport != "docker" {
                // Other transports never apply to registry pulls.
                tracing::debug!(transport, "ignoring policy transport");
                continue;
            }
            for (scope, reqs) in scopes {
                let list = convert_list(reqs, base, &scope)?;
                let key = normalize_scope(&scope)?;
                if docker.insert(key.clone(), list).is_some() {
                    return Err(Error::Policy(format!(
                        "scope {scope:?} names {key:?} a second time"
                    )));
                }
            }
        }
        Ok(Self { default, docker })
    }

    /// Requirements of the most specific scope matching `r`, searched in the
    /// order of containers/image (`docker/policyconfiguration/naming.go`,
    /// `DockerReferenceNamespaces`, commit df7e80d): `name:tag` or
    /// `name@digest`, the repository, each parent namespace, the host, the
    /// `*.domain` wildcards from the most specific (port stripped), `""`, and
    /// finally `default`.
    pub fn requirements_for(&self, r: &Reference) -> &[Requirement] {
        let repo = docker_name(r);
        let mut candidates = Vec::new();
        if let Some(d) = r.digest() {
            candidates.push(format!("{repo}@{d}"));
        } else if let Some(t) = r.tag() {
            candidates.push(format!("{repo}:{t}"));
        }
        let mut cur = repo.as_str();
        loop {
            candidates.push(cur.to_owned());
            match cur.rfind('/') {
                Some(i) => cur = &cur[..i],
                None => break,
            }
        }
        let mut host = r.registry();
        if let Some(i) = host.find(':') {
            host = &host[..i];
        }
        while let Some(i) = host.find('.') {
            host = &host[i + 1..];
            candidates.push(format!("*.{host}"));
        }
        candidates.push(String::new());
        candidates
            .iter()
            .find_map(|c| self.docker.get(c))
            .map_or(&self.default, |reqs| reqs)
    }

    /// What can be decided from the reference alone: a `reject` scope.
    pub fn precheck(&self, r: &Reference) -> Result<()> {
        if self
            .requirements_for(r)
            .iter()
            .any(|q| matches!(q, Requirement::Reject))
        {
            return Err(Error::PolicyDenied(format!(
                "{} is rejected by policy",
                r.whole()
            )));
        }
        Ok(())
    }

    /// Enforces the policy for a resolved image, before any layer is fetched.
    /// Fails closed: any error while fetching or checking signatures denies
    /// the image.
    pub async fn check(&self, reg: &Registry, r: &Reference, m: &ResolvedManifest) -> Result<()> {
        self.precheck(r)?;
        let reqs = self.requirements_for(r);
        // The manifest checks first: they need no network.
        if reqs
            .iter()
            .any(|q| matches!(q, Requirement::EncryptedLayers))
        {
            require_encrypted(r, m)?;
        }
        for req in reqs {
            if let Requirement::SigstoreSigned { keys, identity } = req {
                cosign::verify_image(reg, r, m, keys, identity).await?;
            }
        }
        Ok(())
    }
}

/// Refuses a manifest with a plain layer, or with no layer at all (nothing
/// that was encrypted for the pod would then be in it).
fn require_encrypted(r: &Reference, m: &ResolvedManifest) -> Result<()> {
    if m.layers.is_empty() {
        return Err(Error::PolicyDenied(format!(
            "{} has no layers, the policy requires encrypted ones",
            r.whole()
        )));
    }
    if let Some((i, l)) = m
        .layers
        .iter()
        .enumerate()
        .find(|(_, l)| !split_encrypted(&l.media_type).1)
    {
        return Err(Error::PolicyDenied(format!(
            "{}: layer {i} ({}, {}) is not encrypted, the policy requires encrypted layers",
            r.whole(),
            l.digest,
            l.media_type
        )));
    }
    Ok(())
}

/// The name a reference is looked up under: Docker's normalised repository
/// name (`docker.io/library/busybox` for `busybox`, `docker.io/busybox` and
/// `index.docker.io/library/busybox`). It is never the registry endpoint
/// (`Reference::resolve_registry` answers `index.docker.io` for Docker Hub),
/// which no `docker.io` scope or signed identity would name. oci-spec's
/// reference parser applies the same rules as containers/image
/// `docker/reference/normalize.go` `splitDockerDomain` (commit df7e80d):
/// legacy host `index.docker.io` becomes `docker.io`, a name without a host is
/// on `docker.io`, and `library/` is added to one-component Docker Hub names.
pub(crate) fn docker_name(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

/// A policy scope in the form [`docker_name`] produces.
///
/// containers/image compares scopes literally (its `ValidatePolicyConfigurationScope`
/// for `docker` accepts any string, `docker/docker_transport.go`, commit
/// df7e80d), so a scope that is not in normalised form silently never
/// matches and its images fall to a weaker scope. Here the legacy Docker Hub
/// host is rewritten (`index.docker.io/x` is `docker.io/x`), and a scope
/// without a registry host (`busybox`, `library/busybox`) is refused: it could
/// mean an image or a namespace, and would never match as written.
/// `docker.io/<one component>` stays a namespace, as in containers/image.
fn normalize_scope(scope: &str) -> Result<String> {
    if scope.is_empty() || scope.starts_with("*.") {
        return Ok(scope.to_owned());
    }
    let (host, rest) = match scope.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (scope, None),
    };
    // Docker's test for a registry host (`splitDockerDomain`): a dot, a colon or
    // `localhost`; here the colon must start a port (`busybox:1` is a tag).
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let is_host = port_ok && (port.is_some() || name.contains('.') || name == "localhost");
    if !is_host {
        let library = if scope.contains('/') { "" } else { "library/" };
        return Err(Error::Policy(format!(
            "scope {scope:?} names no registry host; write it in full, e.g. \
             \"docker.io/{library}{scope}\" for Docker Hub"
        )));
    }
    let host = if host == "index.docker.io" {
        "docker.io"
    } else {
        host
    };
    Ok(match rest {
        Some(r) => format!("{host}/{r}"),
        None => host.to_owned(),
    })
}

fn convert_list(raw: Vec<RawReq>, base: Option<&Path>, scope: &str) -> Result<Vec<Requirement>> {
    if raw.is_empty() {
        return Err(Error::Policy(format!(
            "scope {scope:?} has no requirements (use \"reject\" or \"insecureAcceptAnything\" explicitly)"
        )));
    }
    raw.into_iter().map(|r| convert(r, base, scope)).collect()
}

fn convert(r: RawReq, base: Option<&Path>, scope: &str) -> Result<Requirement> {
    match r.kind.as_str() {
        "insecureAcceptAnything" => Ok(Requirement::InsecureAcceptAnything),
        "reject" => Ok(Requirement::Reject),
        "encryptedLayers" => Ok(Requirement::EncryptedLayers),
        "sigstoreSigned" => {
            if r.fulcio.is_some()
                || r.rekor_public_key_path.is_some()
                || r.rekor_public_key_data.is_some()
            {
                return Err(Error::Policy(format!(
                    "scope {scope:?}: Fulcio/Rekor verification is not supported"
                )));
            }
            let mut pems: Vec<Vec<u8>> = Vec::new();
            for p in r
                .key_path
                .into_iter()
                .chain(r.key_paths.into_iter().flatten())
            {
                let path = match base {
                    Some(b) if Path::new(&p).is_relative() => b.join(&p),
                    // No policy file to be relative to (a policy from the
                    // initdata or the KBS): the working directory is no base.
                    None if Path::new(&p).is_relative() => {
                        return Err(Error::Policy(format!(
                            "scope {scope:?}: keyPath {p:?} must be absolute (or use keyData)"
                        )))
                    }
                    _ => Path::new(&p).to_owned(),
                };
                pems.push(std::fs::read(&path).ctx(|| format!("reading key {}", path.display()))?);
            }
            for d in r
                .key_data
                .into_iter()
                .chain(r.key_datas.into_iter().flatten())
            {
                pems.push(
                    STANDARD
                        .decode(d.trim())
                        .map_err(|e| Error::Policy(format!("scope {scope:?}: keyData: {e}")))?,
                );
            }
            if pems.is_empty() {
                return Err(Error::Policy(format!(
                    "scope {scope:?}: sigstoreSigned without a key"
                )));
            }
            let keys = pems
                .iter()
                .map(|p| cosign::parse_public_key(p))
                .collect::<Result<Vec<_>>>()?;
            let identity = match r.signed_identity {
                None => SignedIdentity::MatchRepoDigestOrExact,
                Some(i) => match i.kind.as_str() {
                    "matchExact" => SignedIdentity::MatchExact,
                    "matchRepoDigestOrExact" => SignedIdentity::MatchRepoDigestOrExact,
                    "matchRepository" => SignedIdentity::MatchRepository,
                    "exactReference" => {
                        SignedIdentity::ExactReference(i.docker_reference.ok_or_else(|| {
                            Error::Policy("exactReference without dockerReference".into())
                        })?)
                    }
                    "exactRepository" => {
                        SignedIdentity::ExactRepository(i.docker_repository.ok_or_else(|| {
                            Error::Policy("exactRepository without dockerRepository".into())
                        })?)
                    }
                    other => return Err(Error::Policy(format!("signedIdentity type {other:?}"))),
                },
            };
            Ok(Requirement::SigstoreSigned { keys, identity })
        }
        other => Err(Error::Policy(format!(
            "scope {scope:?}: requirement type {other:?} is not supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn names(reqs: &[Requirement]) -> Vec<&'static str> {
        reqs.iter()
            .map(|r| match r {
                Requirement::InsecureAcceptAnything => "accept",
                Requirement::Reject => "reject",
                Requirement::SigstoreSigned { .. } => "sigstore",
                Requirement::EncryptedLayers => "encrypted",
            })
            .collect()
    }

    #[test]
    fn scope_matching_most_specific_wins() {
        let p = Policy::parse(
            br#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "reg.example:5000/team/app:v1":[{"type":"insecureAcceptAnything"}],
                "reg.example:5000/team":[{"type":"reject"},{"type":"insecureAcceptAnything"}],
                "*.corp.example":[{"type":"insecureAcceptAnything"}],
                "":[{"type":"reject"}]}}}"#,
            None,
        )
        .unwrap();
        let r = |s: &str| Reference::from_str(s).unwrap();
        assert_eq!(
            names(p.requirements_for(&r("reg.example:5000/team/app:v1"))),
            ["accept"]
        );
        assert_eq!(
            names(p.requirements_for(&r("reg.example:5000/team/app:v2"))),
            ["reject", "accept"]
        );
        assert_eq!(
            names(p.requirements_for(&r("a.corp.example/x:1"))),
            ["accept"]
        );
        assert_eq!(
            names(p.requirements_for(&r("other.example/x:1"))),
            ["reject"]
        );
    }

    fn policy(scopes: &str) -> Policy {
        Policy::parse(
            format!(
                r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{{scopes}}}}}}}"#
            )
            .as_bytes(),
            None,
        )
        .unwrap()
    }

    fn lookup(p: &Policy, reference: &str) -> Vec<&'static str> {
        names(p.requirements_for(&Reference::from_str(reference).unwrap()))
    }

    const HUB_BUSYBOX: [&str; 5] = [
        "busybox",
        "busybox:1.36",
        "docker.io/busybox:1.36",
        "docker.io/library/busybox",
        "index.docker.io/library/busybox:latest",
    ];

    #[test]
    fn docker_hub_spellings_hit_docker_io_scopes() {
        let repo = policy(r#""docker.io/library/busybox":[{"type":"insecureAcceptAnything"}]"#);
        let host = policy(r#""docker.io":[{"type":"insecureAcceptAnything"}]"#);
        let ns = policy(r#""docker.io/library":[{"type":"insecureAcceptAnything"}]"#);
        for r in HUB_BUSYBOX {
            assert_eq!(lookup(&repo, r), ["accept"], "{r}");
            assert_eq!(lookup(&host, r), ["accept"], "{r}");
            assert_eq!(lookup(&ns, r), ["accept"], "{r}");
        }
        // Other Docker Hub images and other registries stay on the default.
        for r in [
            "alpine",
            "docker.io/library/busybox2",
            "quay.io/library/busybox",
        ] {
            assert_eq!(lookup(&repo, r), ["reject"], "{r}");
        }
        assert_eq!(lookup(&host, "quay.io/library/busybox"), ["reject"]);
        assert_eq!(lookup(&host, "myorg/app:1"), ["accept"]);
        assert_eq!(lookup(&ns, "myorg/app:1"), ["reject"]);
        // Tag and digest scopes are normalised the same way.
        let tagged =
            policy(r#""docker.io/library/busybox:1.36":[{"type":"insecureAcceptAnything"}]"#);
        assert_eq!(lookup(&tagged, "busybox:1.36"), ["accept"]);
        assert_eq!(lookup(&tagged, "index.docker.io/busybox:1.36"), ["accept"]);
        assert_eq!(lookup(&tagged, "busybox:1.37"), ["reject"]);
        let d = format!("sha256:{}", "ab".repeat(32));
        let pinned = policy(&format!(
            r#""docker.io/library/busybox@{d}":[{{"type":"insecureAcceptAnything"}}]"#
        ));
        assert_eq!(lookup(&pinned, &format!("busybox@{d}")), ["accept"]);
        assert_eq!(lookup(&pinned, "busybox"), ["reject"]);
    }

    #[test]
    fn legacy_hub_host_in_scopes_is_normalised() {
        let p = policy(r#""index.docker.io/library/busybox":[{"type":"insecureAcceptAnything"}]"#);
        for r in HUB_BUSYBOX {
            assert_eq!(lookup(&p, r), ["accept"], "{r}");
        }
        let p = policy(r#""index.docker.io":[{"type":"insecureAcceptAnything"}]"#);
        assert_eq!(lookup(&p, "busybox"), ["accept"]);
        // Two spellings of one scope with possibly different rules: refused.
        let twice = br#"{"default":[{"type":"reject"}],"transports":{"docker":{
            "docker.io/library/busybox":[{"type":"reject"}],
            "index.docker.io/library/busybox":[{"type":"insecureAcceptAnything"}]}}}"#;
        assert!(Policy::parse(twice, None).is_err());
    }

    #[test]
    fn scopes_without_a_registry_host_are_refused() {
        for scope in ["busybox", "library/busybox", "busybox:1.36", "myorg/app"] {
            let text = format!(
                r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{scope}":[{{"type":"insecureAcceptAnything"}}]}}}}}}"#
            );
            let e = Policy::parse(text.as_bytes(), None)
                .unwrap_err()
                .to_string();
            assert!(e.contains("no registry host"), "{scope}: {e}");
        }
        // Hosts: a dot, a port or localhost.
        for scope in [
            "localhost/app",
            "localhost:5000",
            "reg:5000/a",
            "reg.example",
        ] {
            policy(&format!(
                r#""{scope}":[{{"type":"insecureAcceptAnything"}}]"#
            ));
        }
    }

    #[test]
    fn wildcards_ignore_the_port_and_the_most_specific_wins() {
        let p = policy(
            r#""*.corp.example":[{"type":"insecureAcceptAnything"}],
               "*.b.corp.example":[{"type":"reject"},{"type":"reject"}],
               "":[{"type":"reject"},{"type":"insecureAcceptAnything"}]"#,
        );
        assert_eq!(lookup(&p, "a.corp.example:5000/x:1"), ["accept"]);
        assert_eq!(lookup(&p, "a.b.corp.example/x:1"), ["reject", "reject"]);
        // A wildcard never matches the bare domain; the transport default does.
        assert_eq!(lookup(&p, "corp.example/x:1"), ["reject", "accept"]);
    }

    fn manifest(media_types: &[&str]) -> ResolvedManifest {
        let desc = |mt: &str, i: usize| oci_client::manifest::OciDescriptor {
            media_type: mt.to_owned(),
            digest: format!("sha256:{i:064x}"),
            size: 1,
            ..Default::default()
        };
        ResolvedManifest {
            raw: Vec::new(),
            digest: crate::digest::Sha256Digest::of(b"m"),
            index_digest: None,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            config: desc("application/vnd.oci.image.config.v1+json", 0),
            layers: media_types
                .iter()
                .enumerate()
                .map(|(i, mt)| desc(mt, i + 1))
                .collect(),
        }
    }

    #[test]
    fn encrypted_layers_requires_every_layer_encrypted() {
        let p = policy(r#""reg.example/enc":[{"type":"encryptedLayers"}]"#);
        let r = Reference::from_str("reg.example/enc/app:1").unwrap();
        assert_eq!(names(p.requirements_for(&r)), ["encrypted"]);
        let enc = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
        let plain = "application/vnd.oci.image.layer.v1.tar+gzip";
        require_encrypted(&r, &manifest(&[enc, enc])).unwrap();
        let e = require_encrypted(&r, &manifest(&[enc, plain, enc])).unwrap_err();
        assert!(
            matches!(&e, Error::PolicyDenied(m) if m.contains("layer 1") && m.contains(plain)),
            "{e}"
        );
        assert!(require_encrypted(&r, &manifest(&[plain])).is_err());
        assert!(require_encrypted(&r, &manifest(&[])).is_err());
        // The suffix must end the media type.
        assert!(require_encrypted(&r, &manifest(&["x+encrypted+gzip"])).is_err());
    }

    #[test]
    fn relative_key_paths_need_a_policy_file() {
        let text = br#"{"default":[{"type":"sigstoreSigned","keyPath":"cosign.pub"}]}"#;
        let e = Policy::parse(text, None).unwrap_err().to_string();
        assert!(e.contains("must be absolute"), "{e}");
    }

    #[test]
    fn a_reject_scope_is_decided_from_the_reference() {
        let p = policy(r#""reg.example/ok":[{"type":"insecureAcceptAnything"}]"#);
        let r = |s: &str| Reference::from_str(s).unwrap();
        p.precheck(&r("reg.example/ok/app:1")).unwrap();
        let e = p.precheck(&r("reg.example/other:1")).unwrap_err();
        assert!(matches!(e, Error::PolicyDenied(_)), "{e}");
    }

    #[test]
    fn unknown_or_empty_requirements_fail_closed() {
        assert!(Policy::parse(
            br#"{"default":[{"type":"signedBy","keyType":"GPGKeys"}]}"#,
            None
        )
        .is_err());
        assert!(Policy::parse(br#"{"default":[]}"#, None).is_err());
        assert!(Policy::parse(br#"{"default":[{"type":"sigstoreSigned"}]}"#, None).is_err());
        assert!(Policy::parse(br#"{"defaults":[{"type":"reject"}]}"#, None).is_err());
    }
}
