//! Verification of cosign "simple signing" signatures with a public key.
//!
//! Implemented on RustCrypto instead of the `sigstore` crate: sigstore 0.15
//! brings its own `oci-client` release, TUF, X.509 and Rekor stacks we do not
//! use in the guest. The format is small: the signature manifest is tagged
//! `sha256-<hex>.sig` in the image's repository, each layer is a JSON payload
//! (`application/vnd.dev.cosign.simplesigning.v1+json`) with the base64 DER
//! ECDSA-P256/SHA-256 signature in the `dev.cosignproject.cosign/signature`
//! annotation.

use oci_client::Reference;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::policy::{docker_name, SignedIdentity};
use crate::registry::{Registry, ResolvedManifest};

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const PAYLOAD_LIMIT: u64 = 64 << 10;
const MAX_SIGNATURES: usize = 32;

/// Parses a cosign public key (PEM SubjectPublicKeyInfo, ECDSA P-256).
pub fn parse_public_key(pem: &[u8]) -> Result<VerifyingKey> {
    let text =
        std::str::from_utf8(pem).map_err(|_| Error::Policy("key is not UTF-8 PEM".into()))?;
    VerifyingKey::from_public_key_pem(text)
        .map_err(|e| Error::Policy(format!("not an ECDSA P-256 public key: {e}")))
}

/// The simple-signing payload cosign signs for `docker_reference` (the
/// repository) and `manifest_digest`.
pub fn simple_signing_payload(docker_reference: &str, manifest_digest: &Sha256Digest) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest.to_string()},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string()
    .into_bytes()
}

/// The tag cosign stores signatures of `digest` under.
pub fn signature_tag(digest: &Sha256Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: ImageClaim,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct ImageClaim {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigManifest {
    #[serde(default)]
    layers: Vec<oci_client::manifest::OciDescriptor>,
}

/// Requires at least one valid signature, by one of `keys`, binding the
/// image's manifest (or index) digest to an accepted identity.
pub async fn verify_image(
    reg: &Registry,
    r: &Reference,
    m: &ResolvedManifest,
    keys: &[VerifyingKey],
    identity: &SignedIdentity,
) -> Result<()> {
    let mut digests = vec![m.digest.clone()];
    if let Some(i) = &m.index_digest {
        digests.push(i.clone());
    }
    let mut reasons = Vec::new();
    for d in &digests {
        let sig_ref = Reference::with_tag(
            r.registry().to_owned(),
            r.repository().to_owned(),
            signature_tag(d),
        );
        let manifest = match reg.signature_manifest(&sig_ref).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                reasons.push(format!("no signature at {}", signature_tag(d)));
                continue;
            }
            Err(e) => return Err(Error::PolicyDenied(format!("fetching signatures: {e}"))),
        };
        let sm: SigManifest = serde_json::from_slice(&manifest)
            .map_err(|e| Error::PolicyDenied(format!("signature manifest: {e}")))?;
        for layer in sm.layers.iter().take(MAX_SIGNATURES) {
            if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
                continue;
            }
            let Some(sig_b64) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            else {
                reasons.push("signature layer without signature annotation".into());
                continue;
            };
            let payload = reg
                .small_blob(&sig_ref, layer, PAYLOAD_LIMIT)
                .await
                .map_err(|e| Error::PolicyDenied(format!("fetching signature payload: {e}")))?;
            match check_one(&payload, sig_b64, keys, d, r, identity) {
                Ok(()) => {
                    tracing::info!(image = %r.whole(), digest = %d, "signature verified");
                    return Ok(());
                }
                Err(e) => reasons.push(e),
            }
        }
    }
    Err(Error::PolicyDenied(format!(
        "{}: no acceptable sigstore signature ({})",
        r.whole(),
        reasons.join("; ")
    )))
}

fn check_one(
    payload: &[u8],
    sig_b64: &str,
    keys: &[VerifyingKey],
    digest: &Sha256Digest,
    r: &Reference,
    identity: &SignedIdentity,
) -> std::result::Result<(), String> {
    let der = STANDARD
        .decode(sig_b64.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let sig = Signature::from_der(&der).map_err(|_| "signature is not DER ECDSA".to_owned())?;
    if !keys.iter().any(|k| k.verify(payload, &sig).is_ok()) {
        return Err("signature does not verify with any trusted key".into());
    }
    // Only now is the payload trusted enough to be parsed.
    let p: Payload = serde_json::from_slice(payload).map_err(|e| format!("payload JSON: {e}"))?;
    if p.critical.kind != "cosign container image signature" {
        return Err(format!("payload type {:?}", p.critical.kind));
    }
    if p.critical.image.digest != digest.to_string() {
        return Err(format!(
            "signature is for {}, not {digest}",
            p.critical.image.digest
        ));
    }
    identity_ok(&p.critical.identity.docker_reference, r, identity)
}

fn normalize_repo(s: &str) -> std::result::Result<(String, Option<String>), String> {
    let r: Reference = s
        .parse()
        .map_err(|e| format!("signed identity {s:?}: {e}"))?;
    let repo = docker_name(&r);
    // An explicit tag in the signed identity (the default "latest" is not).
    let tag = if s.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        r.tag().map(str::to_owned)
    } else {
        None
    };
    Ok((repo, tag))
}

fn identity_ok(
    signed: &str,
    r: &Reference,
    identity: &SignedIdentity,
) -> std::result::Result<(), String> {
    let (signed_repo, signed_tag) = normalize_repo(signed)?;
    let repo = docker_name(r);
    let tag = r.tag().map(str::to_owned);
    let ok = match identity {
        SignedIdentity::MatchRepository => signed_repo == repo,
        SignedIdentity::MatchExact => {
            signed_repo == repo && r.digest().is_none() && signed_tag == tag
        }
        SignedIdentity::MatchRepoDigestOrExact => {
            signed_repo == repo && (r.digest().is_some() || signed_tag == tag)
        }
        SignedIdentity::ExactReference(want) => normalize_repo(want)? == (signed_repo, signed_tag),
        SignedIdentity::ExactRepository(want) => normalize_repo(want)?.0 == signed_repo,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "signed identity {signed:?} does not match {}",
            r.whole()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    #[test]
    fn payload_signature_digest_and_identity() {
        let sk = key(3);
        let d = Sha256Digest::of(b"manifest");
        let r: Reference = "127.0.0.1:5000/team/app:v1".parse().unwrap();
        let payload = simple_signing_payload("127.0.0.1:5000/team/app", &d);
        let sig: Signature = sk.sign(&payload);
        let b64 = STANDARD.encode(sig.to_der().as_bytes());
        let keys = [*sk.verifying_key()];
        check_one(
            &payload,
            &b64,
            &keys,
            &d,
            &r,
            &SignedIdentity::MatchRepository,
        )
        .unwrap();
        // Another key.
        let other = [*key(4).verifying_key()];
        assert!(check_one(
            &payload,
            &b64,
            &other,
            &d,
            &r,
            &SignedIdentity::MatchRepository
        )
        .is_err());
        // Another digest.
        let d2 = Sha256Digest::of(b"other");
        assert!(check_one(
            &payload,
            &b64,
            &keys,
            &d2,
            &r,
            &SignedIdentity::MatchRepository
        )
        .is_err());
        // Another repository.
        let r2: Reference = "127.0.0.1:5000/team/evil:v1".parse().unwrap();
        assert!(check_one(
            &payload,
            &b64,
            &keys,
            &d,
            &r2,
            &SignedIdentity::MatchRepository
        )
        .is_err());
        // Default identity needs the tag for tag references.
        assert!(check_one(
            &payload,
            &b64,
            &keys,
            &d,
            &r,
            &SignedIdentity::MatchRepoDigestOrExact
        )
        .is_err());
        // Docker Hub: cosign names the repository `index.docker.io/...`.
        for signed in [
            "index.docker.io/library/busybox",
            "docker.io/library/busybox",
        ] {
            for pulled in ["busybox:1", "docker.io/library/busybox:1"] {
                let r: Reference = pulled.parse().unwrap();
                identity_ok(signed, &r, &SignedIdentity::MatchRepository).unwrap();
            }
        }
        let r: Reference = "busybox:1".parse().unwrap();
        assert!(identity_ok(
            "index.docker.io/library/alpine",
            &r,
            &SignedIdentity::MatchRepository
        )
        .is_err());
        // A tampered payload.
        let mut bad = payload.clone();
        bad[10] ^= 1;
        assert!(check_one(&bad, &b64, &keys, &d, &r, &SignedIdentity::MatchRepository).is_err());
    }
}
