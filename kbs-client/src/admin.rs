//! Admin verbs against the KBS admin API.

use anyhow::{bail, Context};
use base64::Engine;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// File holding an admin JWT (see `mint-admin-token`).
    #[arg(long, conflicts_with = "auth_private_key")]
    admin_token_file: Option<PathBuf>,
    /// Admin private key: a short-lived token is minted for this call.
    #[arg(long)]
    auth_private_key: Option<PathBuf>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Store a resource (raw bytes of the file).
    SetResource {
        #[arg(long)]
        path: String,
        #[arg(long)]
        resource_file: PathBuf,
    },
    /// Delete a resource.
    DeleteResource {
        #[arg(long)]
        path: String,
    },
    /// Replace the resource policy (Rego, package policy, rule allow).
    SetResourcePolicy {
        #[arg(long)]
        policy_file: PathBuf,
    },
    /// Print the resource policy.
    GetResourcePolicy,
    /// Replace an attestation policy (Rego, package policy, rule status).
    SetAttestationPolicy {
        #[arg(long)]
        policy_file: PathBuf,
        #[arg(long, default_value = "default")]
        id: String,
    },
    /// Register one reference value: by default a list holding the value as a
    /// string (`svn` `1` → {"svn": ["1"]}). Sent as Trustee's RVPS sample message,
    /// so Trustee's KBS accepts it too.
    SetSampleReferenceValue {
        name: String,
        value: String,
        /// The value is an integer (`{"svn": [1]}`).
        #[arg(long, group = "value_type")]
        as_integer: bool,
        /// The value is a boolean (`{"debug": [false]}`).
        #[arg(long, group = "value_type")]
        as_bool: bool,
        /// Register the value itself, not a one-element list.
        #[arg(long)]
        as_single_value: bool,
    },
    /// Register reference values from a JSON file: {"name": ["v1", "v2"], ...}.
    SetReferenceValues { file: PathBuf },
    /// Print the reference value registered under one name.
    GetReferenceValue {
        #[arg(long)]
        id: String,
    },
    /// Print all reference values.
    GetReferenceValues,
    /// Register a workload's initdata: its digest is added to the
    /// `init_data_digest` reference value (kept: the digests already there), so
    /// the attestation policies accept evidence bound to it. Prints the digest.
    RegisterInitdata {
        /// The initdata TOML exactly as the pod ships it (the digest is over
        /// these bytes).
        file: PathBuf,
    },
}

/// Trustee's RVPS sample message: `payload` is base64 (standard alphabet) of the JSON
/// object name → value (`tools/kbs-client/src/lib.rs` `set_sample_rv` @78962cd).
fn sample_reference_value(
    name: &str,
    value: &str,
    as_integer: bool,
    as_bool: bool,
    single: bool,
) -> anyhow::Result<serde_json::Value> {
    let v: serde_json::Value = if as_integer {
        value
            .parse::<i64>()
            .with_context(|| format!("{value:?} is not an integer"))?
            .into()
    } else if as_bool {
        value
            .parse::<bool>()
            .with_context(|| format!("{value:?} is not true or false"))?
            .into()
    } else {
        value.into()
    };
    let v = if single { v } else { serde_json::json!([v]) };
    let payload = serde_json::json!({ name: v }).to_string();
    Ok(serde_json::json!({
        "version": "0.1.0",
        "type": "sample",
        "payload": base64::engine::general_purpose::STANDARD.encode(payload),
    }))
}

pub fn write_private(path: &Path, pem: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(pem)?;
    Ok(())
}

pub fn mint(private_key: &Path, ttl_secs: u64, role: &str) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(private_key)
        .with_context(|| format!("reading {}", private_key.display()))?;
    let key = coco_jose::jwt::SigningKey::from_pkcs8_pem(&pem)?;
    let now = coco_jose::now_secs();
    Ok(key.sign(&serde_json::json!({
        "role": role,
        "iat": now,
        "exp": now + ttl_secs,
    }))?)
}

fn http(cert_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(p) = cert_file {
        let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            roots.add(c?)?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?)
}

/// Read-modify-write of `init_data_digest`. Not atomic: two admins
/// registering at the same moment can lose one digest (fails closed: that
/// workload is refused until registered again).
async fn register_initdata(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    file: &Path,
) -> anyhow::Result<()> {
    let name = coco_jose::initdata::REFERENCE_VALUE;
    let toml =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let digest = coco_jose::initdata::Initdata::parse(&toml)
        .with_context(|| format!("{} is not valid initdata", file.display()))?
        .digest_hex();
    let resp = client
        .get(format!("{base}/reference-value/{name}"))
        .bearer_auth(token)
        .send()
        .await?;
    let current = match resp.status() {
        reqwest::StatusCode::NOT_FOUND => None,
        s if s.is_success() => Some(resp.json().await.context("reference value")?),
        s => bail!("KBS answered {s}: {}", resp.text().await?),
    };
    let list = coco_jose::initdata::with_registered_digest(current, &digest)?;
    let resp = client
        .post(format!("{base}/reference-value"))
        .bearer_auth(token)
        .json(&serde_json::json!({ name: list }))
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        bail!("KBS answered {status}: {}", resp.text().await?);
    }
    println!("{digest}");
    Ok(())
}

pub async fn run(url: &str, cert_file: Option<&Path>, args: &ConfigArgs) -> anyhow::Result<()> {
    let token = match (&args.admin_token_file, &args.auth_private_key) {
        (Some(f), _) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_owned(),
        (None, Some(k)) => mint(k, 300, "admin")?,
        (None, None) => bail!("give --admin-token-file or --auth-private-key"),
    };
    let base = format!("{}/kbs/v0", url.trim_end_matches('/'));
    let client = http(cert_file)?;
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let req = match &args.verb {
        Verb::SetResource {
            path,
            resource_file,
        } => client
            .post(format!("{base}/resource/{path}"))
            .body(read(resource_file)?),
        Verb::DeleteResource { path } => client.delete(format!("{base}/resource/{path}")),
        Verb::SetResourcePolicy { policy_file } => client
            .post(format!("{base}/resource-policy"))
            .json(&serde_json::json!({"policy": b64(&read(policy_file)?)})),
        Verb::GetResourcePolicy => client.get(format!("{base}/resource-policy")),
        Verb::SetAttestationPolicy { policy_file, id } => client
            .post(format!("{base}/attestation-policy"))
            .json(&serde_json::json!({
                "policy_id": id, "type": "rego", "policy": b64(&read(policy_file)?)
            })),
        Verb::SetSampleReferenceValue {
            name,
            value,
            as_integer,
            as_bool,
            as_single_value,
        } => client
            .post(format!("{base}/reference-value"))
            .json(&sample_reference_value(
                name,
                value,
                *as_integer,
                *as_bool,
                *as_single_value,
            )?),
        Verb::GetReferenceValue { id } => client.get(format!("{base}/reference-value/{id}")),
        Verb::SetReferenceValues { file } => {
            let v: serde_json::Value = serde_json::from_slice(&read(file)?)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            client.post(format!("{base}/reference-value")).json(&v)
        }
        Verb::GetReferenceValues => client.get(format!("{base}/reference-value")),
        // Two requests of its own.
        Verb::RegisterInitdata { file } => {
            return register_initdata(&client, &base, &token, file).await
        }
    };
    let resp = req.bearer_auth(token).send().await?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        bail!("KBS answered {status}: {body}");
    }
    if matches!(args.verb, Verb::GetResourcePolicy) {
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v["policy"].as_str().unwrap_or_default())?;
        print!("{}", String::from_utf8_lossy(&raw));
    } else if !body.is_empty() {
        println!("{body}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message Trustee's kbs-client sent for `set-sample-reference-value svn 1`
    /// (kbs/testdata/peers/trustee-client/admin-requests.json) is the one we send.
    #[test]
    fn sample_reference_value_is_trustees_message() {
        let cap: serde_json::Value = serde_json::from_str(include_str!(
            "../../kbs/testdata/peers/trustee-client/admin-requests.json"
        ))
        .unwrap();
        let theirs = &cap["set_sample_reference_value_request"];
        let ours = sample_reference_value("svn", "1", false, false, false).unwrap();
        assert_eq!(&ours, theirs);
    }

    #[test]
    fn typed_and_single_values() {
        let decode = |m: serde_json::Value| -> serde_json::Value {
            let p = base64::engine::general_purpose::STANDARD
                .decode(m["payload"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice(&p).unwrap()
        };
        let m = sample_reference_value("svn", "7", true, false, false).unwrap();
        assert_eq!(decode(m), serde_json::json!({"svn": [7]}));
        let m = sample_reference_value("debug", "false", false, true, true).unwrap();
        assert_eq!(decode(m), serde_json::json!({"debug": false}));
        assert!(sample_reference_value("svn", "x", true, false, false).is_err());
        assert!(sample_reference_value("d", "yes", false, true, false).is_err());
    }
}
