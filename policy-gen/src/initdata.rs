//! The pod's initdata document, in the shape of deploy/initdata.toml: `aa.toml`
//! (attestation agent: the KBS and its CA), `cdh.toml` (confidential data hub: the
//! same KBS, registries reached over plain HTTP) and `policy.rego`. Serialised with
//! `toml`, so a policy or certificate can never break out of its string, and
//! validated with the one initdata parser (`coco_jose::initdata`).
//!
//! Field names: guest-components @8246e5e, attestation-agent/attestation-agent/src/
//! config/kbs.rs (`[token_configs.kbs] url, cert`) and confidential-data-hub/hub/
//! src/config/mod.rs (`[kbc] name, url, kbs_cert`); `[image] insecure_registries` is
//! read by agent/src/guest_pull.rs.

use coco_jose::initdata::Initdata;
use toml::{Table, Value};

use crate::error::{Error, Result};

/// Initdata document version and digest algorithm (as deploy/initdata.toml).
const VERSION: &str = "0.1.0";
const ALGORITHM: &str = "sha384";

/// What the pod owner says about the guest's KBS and registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `https://kbs.example:8080`.
    pub kbs_url: String,
    /// PEM of the CA the guest trusts for the KBS.
    pub kbs_cert_pem: Option<String>,
    /// `host:port` of registries the guest reaches over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The pod's image policy (containers-policy.json, with `encryptedLayers`), put
    /// inline into `cdh.toml` `[image] image_security_policy`; the guest enforces it
    /// on every pull.
    pub image_policy: Option<String>,
}

impl Settings {
    fn check(&self) -> Result<()> {
        let u = &self.kbs_url;
        let rest = u
            .strip_prefix("https://")
            .or_else(|| u.strip_prefix("http://"))
            .ok_or_else(|| {
                Error::Settings(format!("KBS URL {u:?} is not http(s)://host[:port]"))
            })?;
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Err(Error::Settings(format!("KBS URL {u:?} has no host")));
        }
        if let Some(p) = &self.image_policy {
            // The guest's own parser: a policy it would refuse is refused here.
            image_mgmt::policy::Policy::parse(p.as_bytes(), None)
                .map_err(|e| Error::Settings(format!("image policy: {e}")))?;
        }
        if let Some(pem) = &self.kbs_cert_pem {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::Settings(
                    "the KBS CA file holds no PEM certificate".into(),
                ));
            }
        }
        Ok(())
    }
}

fn table(entries: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Table(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn to_toml(t: &Value) -> Result<String> {
    toml::to_string_pretty(t).map_err(|e| Error::Settings(format!("writing TOML: {e}")))
}

/// The initdata TOML carrying `policy`, parsed back by the shared parser.
pub fn build(s: &Settings, policy: &str) -> Result<Initdata> {
    s.check()?;
    let url = Value::String(s.kbs_url.clone());
    let cert = s.kbs_cert_pem.clone().map(Value::String);
    let mut kbs = vec![("url", url.clone())];
    kbs.extend(cert.clone().map(|c| ("cert", c)));
    let aa = table([("token_configs", table([("kbs", table(kbs))]))]);
    let mut kbc = vec![("name", Value::String("cc_kbc".into())), ("url", url)];
    kbc.extend(cert.map(|c| ("kbs_cert", c)));
    let mut cdh = vec![("kbc", table(kbc))];
    let mut image = Vec::new();
    if !s.insecure_registries.is_empty() {
        let regs = s
            .insecure_registries
            .iter()
            .cloned()
            .map(Value::String)
            .collect();
        image.push(("insecure_registries", Value::Array(regs)));
    }
    if let Some(p) = &s.image_policy {
        image.push(("image_security_policy", Value::String(p.clone())));
    }
    if !image.is_empty() {
        cdh.push(("image", table(image)));
    }
    let mut data = Table::new();
    data.insert("aa.toml".into(), Value::String(to_toml(&aa)?));
    data.insert("cdh.toml".into(), Value::String(to_toml(&table(cdh))?));
    data.insert("policy.rego".into(), Value::String(policy.to_owned()));
    let doc = table([
        ("version", Value::String(VERSION.into())),
        ("algorithm", Value::String(ALGORITHM.into())),
        ("data", Value::Table(data)),
    ]);
    Ok(Initdata::parse(&to_toml(&doc)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn same_shape_as_the_deployed_initdata() {
        let s = Settings {
            kbs_url: "https://kbs.example:8080".into(),
            kbs_cert_pem: Some(PEM.into()),
            insecure_registries: vec!["10.0.2.2:5000".into()],
            image_policy: None,
        };
        let policy = "package agent_policy\nx := `a'''b\"\"\"c`\n";
        let d = build(&s, policy).unwrap();
        assert_eq!(
            d.policy(),
            Some(policy),
            "the policy survives quoting exactly"
        );
        let deployed = Initdata::parse(include_str!("../../deploy/initdata.toml")).unwrap();
        assert_eq!(d.algorithm, deployed.algorithm);
        assert_eq!(
            d.data.keys().collect::<Vec<_>>(),
            deployed.data.keys().collect::<Vec<_>>()
        );
        let aa: Table = d.data["aa.toml"].parse().unwrap();
        assert_eq!(
            aa["token_configs"]["kbs"]["url"].as_str(),
            Some("https://kbs.example:8080")
        );
        assert_eq!(aa["token_configs"]["kbs"]["cert"].as_str(), Some(PEM));
        let cdh: Table = d.data["cdh.toml"].parse().unwrap();
        assert_eq!(cdh["kbc"]["name"].as_str(), Some("cc_kbc"));
        assert_eq!(cdh["kbc"]["kbs_cert"].as_str(), Some(PEM));
        assert_eq!(
            cdh["image"]["insecure_registries"][0].as_str(),
            Some("10.0.2.2:5000")
        );
        // Deterministic: the digest is a function of the settings and the policy.
        assert_eq!(build(&s, policy).unwrap().digest_hex(), d.digest_hex());
        assert_eq!(d.digest_hex().len(), 96);
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = Settings {
            kbs_url: "http://10.0.2.2:8080".into(),
            ..Default::default()
        };
        let d = build(&ok, "package agent_policy\n").unwrap();
        let cdh: Table = d.data["cdh.toml"].parse().unwrap();
        assert!(cdh.get("image").is_none() && cdh["kbc"].get("kbs_cert").is_none());
        for url in ["kbs:8080", "https://", "ftp://x", "https://a b"] {
            let s = Settings {
                kbs_url: url.into(),
                ..Default::default()
            };
            assert!(build(&s, "").is_err(), "{url}");
        }
        let s = Settings {
            kbs_cert_pem: Some("not a cert".into()),
            ..ok
        };
        assert!(build(&s, "").is_err());
    }

    #[test]
    fn the_image_policy_reaches_the_guest_settings_and_a_bad_one_is_refused() {
        let policy = r#"{"default":[{"type":"reject"}],"transports":{"docker":{"10.0.2.2:5000/app":[{"type":"encryptedLayers"}]}}}"#;
        let s = Settings {
            kbs_url: "https://kbs.example:8080".into(),
            kbs_cert_pem: None,
            insecure_registries: vec!["10.0.2.2:5000".into()],
            image_policy: Some(policy.into()),
        };
        let d = build(&s, "package agent_policy\n").unwrap();
        // Read back with the agent's cdh.toml parser.
        let g = image_mgmt::settings::ImageSettings::from_cdh_toml(&d.data["cdh.toml"]).unwrap();
        assert_eq!(g.insecure_registries, ["10.0.2.2:5000"]);
        assert!(
            matches!(&g.policy, image_mgmt::settings::PolicySource::Inline(t) if t == policy),
            "{:?}",
            g.policy
        );
        let bad = Settings {
            image_policy: Some(r#"{"default":[{"type":"sometimesSigned"}]}"#.into()),
            ..s
        };
        assert!(matches!(
            build(&bad, "package agent_policy\n"),
            Err(Error::Settings(_))
        ));
    }
}
