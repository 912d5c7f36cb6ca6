//! Signature policy in the containers-policy.json(5) format.
//!
//! Supported requirement types: `insecureAcceptAnything`, `reject` and
//! `sigstoreSigned` with a public key (`keyPath`, `keyPaths` or `keyData`).
//! Anything else (GPG `signedBy`, Fulcio, Rekor) is refused when the policy
//! is loaded: an unknown rule must never silently allow an image.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use oci_client::Reference;
use serde::Deserialize;

use crate::cosign;
use crate::error::{Error, IoContext, Result};
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
                docker.insert(scope, list);
            }
        }
        Ok(Self { default, docker })
    }

    /// Requirements of the most specific scope matching `r`.
    pub fn requirements_for(&self, r: &Reference) -> &[Requirement] {
        let repo = format!("{}/{}", r.resolve_registry(), r.repository());
        let mut candidates = Vec::new();
        if let Some(d) = r.digest() {
            candidates.push(format!("{repo}@{d}"));
        } else if let Some(t) = r.tag() {
            candidates.push(format!("{repo}:{t}"));
        }
        // Repository, then each parent namespace, then the host.
        let mut cur = repo.as_str();
        loop {
            candidates.push(cur.to_owned());
            match cur.rfind('/') {
                Some(i) => cur = &cur[..i],
                None => break,
            }
        }
        for c in &candidates {
            if let Some(reqs) = self.docker.get(c) {
                return reqs;
            }
        }
        // Wildcard host scopes: "*.example.com" matches "a.b.example.com".
        let host = r.resolve_registry();
        let mut best: Option<(&String, &Vec<Requirement>)> = None;
        for (scope, reqs) in &self.docker {
            if let Some(suffix) = scope.strip_prefix("*.") {
                if host.ends_with(&format!(".{suffix}"))
                    && best.is_none_or(|(b, _)| scope.len() > b.len())
                {
                    best = Some((scope, reqs));
                }
            }
        }
        if let Some((_, reqs)) = best {
            return reqs;
        }
        if let Some(reqs) = self.docker.get("") {
            return reqs;
        }
        &self.default
    }

    /// Enforces the policy for a resolved image. Fails closed: any error
    /// while fetching or checking signatures denies the image.
    pub async fn check(&self, reg: &Registry, r: &Reference, m: &ResolvedManifest) -> Result<()> {
        let reqs = self.requirements_for(r);
        for req in reqs {
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => {
                    return Err(Error::PolicyDenied(format!(
                        "{} is rejected by policy",
                        r.whole()
                    )))
                }
                Requirement::SigstoreSigned { keys, identity } => {
                    cosign::verify_image(reg, r, m, keys, identity).await?;
                }
            }
        }
        Ok(())
    }
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
