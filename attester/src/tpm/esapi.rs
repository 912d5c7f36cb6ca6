//! The real TPM, through tss-esapi (libtss2-esys) and any TCTI.
//!
//! A tss-esapi `Context` is not `Send`, so each operation opens its own context
//! (a device open or a TCP connect) and drops it; attestation is rare enough.

use super::{RawQuote, TpmDevice, TpmDeviceError};
use rsa::pkcs8::EncodePublicKey;
use sha2::{Digest as _, Sha256};
use std::str::FromStr;
use tss_esapi::{
    attributes::ObjectAttributesBuilder,
    constants::CapabilityType,
    handles::{KeyHandle, ObjectHandle, PcrHandle, PersistentTpmHandle, TpmHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, PublicAlgorithm, RsaSchemeAlgorithm},
        dynamic_handles::Persistent,
        ecc::EccCurve,
        key_bits::RsaKeyBits,
        resource_handles::{Hierarchy, Provision},
    },
    structures::{
        AttestInfo, CapabilityData, Data, Digest, DigestValues, EccPoint, EccScheme, HashScheme,
        KeyDerivationFunctionScheme, PcrSelectionListBuilder, PcrSlot, Public, PublicBuilder,
        PublicEccParametersBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent,
        RsaScheme, SignatureScheme, SymmetricDefinitionObject,
    },
    tcti_ldr::TctiNameConf,
    traits::Marshall,
    tss2_esys::TPM2_HANDLE,
    Context,
};

/// AK key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AkAlgorithm {
    /// RSA-2048, RSASSA-PKCS1-v1_5 with SHA-256. What Trustee's verifier accepts.
    #[default]
    Rsa2048,
    /// NIST P-256, ECDSA with SHA-256. Much faster to create on a TPM.
    EccP256,
}

/// Hierarchy the AK is a primary key of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AkHierarchy {
    /// Derived from the endorsement primary seed: the same AK on every boot of
    /// this TPM, until the TPM is cleared of its endorsement seed (never, normally).
    #[default]
    Endorsement,
    /// Derived from the storage primary seed: changes when the owner clears the TPM.
    Owner,
}

/// How the AK is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AkConfig {
    pub algorithm: AkAlgorithm,
    pub hierarchy: AkHierarchy,
    /// Use the key at this persistent handle (0x81xxxxxx); if the handle is
    /// empty, create the AK and make it persistent there. `None`: a transient
    /// primary key is derived for each quote (deterministic, so the same AK).
    pub persistent_handle: Option<u32>,
}

/// tss-esapi backed [`TpmDevice`].
#[derive(Debug, Clone)]
pub struct EsapiTpm {
    tcti: String,
    ak: AkConfig,
}

fn err(op: &'static str) -> impl Fn(tss_esapi::Error) -> TpmDeviceError {
    move |e| TpmDeviceError::new(op, e)
}

impl EsapiTpm {
    /// Check the TCTI string now, so a typo fails at start-up, not at attestation.
    pub fn new(tcti: &str, ak: AkConfig) -> Result<Self, TpmDeviceError> {
        TctiNameConf::from_str(tcti).map_err(err("TCTI configuration"))?;
        Ok(Self {
            tcti: tcti.to_string(),
            ak,
        })
    }

    fn context(&self) -> Result<Context, TpmDeviceError> {
        let conf = TctiNameConf::from_str(&self.tcti).map_err(err("TCTI configuration"))?;
        Context::new(conf).map_err(err("open"))
    }

    fn template(&self) -> Result<Public, tss_esapi::Error> {
        // A restricted signing key: the TPM refuses to sign with it any digest of
        // data that starts with TPM_GENERATED_VALUE unless it built that data.
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_restricted(true)
            .with_sign_encrypt(true)
            .with_decrypt(false)
            .build()?;
        let builder = PublicBuilder::new()
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs);
        match self.ak.algorithm {
            AkAlgorithm::Rsa2048 => builder
                .with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(
                    PublicRsaParametersBuilder::new()
                        .with_symmetric(SymmetricDefinitionObject::Null)
                        .with_scheme(RsaScheme::create(
                            RsaSchemeAlgorithm::RsaSsa,
                            Some(HashingAlgorithm::Sha256),
                        )?)
                        .with_key_bits(RsaKeyBits::Rsa2048)
                        .with_exponent(RsaExponent::default())
                        .with_is_signing_key(true)
                        .with_is_decryption_key(false)
                        .with_restricted(true)
                        .build()?,
                )
                .with_rsa_unique_identifier(PublicKeyRsa::default())
                .build(),
            AkAlgorithm::EccP256 => builder
                .with_public_algorithm(PublicAlgorithm::Ecc)
                .with_ecc_parameters(
                    PublicEccParametersBuilder::new()
                        .with_symmetric(SymmetricDefinitionObject::Null)
                        .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(
                            HashingAlgorithm::Sha256,
                        )))
                        .with_curve(EccCurve::NistP256)
                        .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                        .with_is_signing_key(true)
                        .with_is_decryption_key(false)
                        .with_restricted(true)
                        .build()?,
                )
                .with_ecc_unique_identifier(EccPoint::default())
                .build(),
        }
    }

    fn create_primary(&self, ctx: &mut Context) -> Result<KeyHandle, TpmDeviceError> {
        let template = self.template().map_err(err("AK template"))?;
        let hierarchy = match self.ak.hierarchy {
            AkHierarchy::Endorsement => Hierarchy::Endorsement,
            AkHierarchy::Owner => Hierarchy::Owner,
        };
        let created = ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(hierarchy, template, None, None, None, None)
            })
            .map_err(err("create AK"))?;
        Ok(created.key_handle)
    }

    /// The AK handle, and whether it is transient (to be flushed after use).
    fn ak(&self, ctx: &mut Context) -> Result<(KeyHandle, bool), TpmDeviceError> {
        let Some(raw) = self.ak.persistent_handle else {
            return Ok((self.create_primary(ctx)?, true));
        };
        let handle = PersistentTpmHandle::new(raw).map_err(err("AK persistent handle"))?;
        // Ask whether the handle is in use first: a failed lookup makes libtss2
        // log errors that would alarm whoever reads the guest's logs.
        let (found, _) = ctx
            .get_capability(CapabilityType::Handles, raw, 1)
            .map_err(err("list persistent handles"))?;
        let exists = matches!(found, CapabilityData::Handles(list)
            if list.iter().any(|h| TPM2_HANDLE::from(*h) == raw));
        if exists {
            let obj = ctx
                .tr_from_tpm_public(TpmHandle::Persistent(handle))
                .map_err(err("load persistent AK"))?;
            return Ok((KeyHandle::from(obj), false));
        }
        tracing::info!(
            handle = format!("{raw:#010x}"),
            "creating the AK and persisting it"
        );
        let transient = self.create_primary(ctx)?;
        let persisted = ctx
            .execute_with_nullauth_session(|c| {
                c.evict_control(
                    Provision::Owner,
                    ObjectHandle::from(transient),
                    Persistent::Persistent(handle),
                )
            })
            .map_err(err("persist AK"));
        ctx.flush_context(ObjectHandle::from(transient))
            .map_err(err("flush AK"))?;
        Ok((KeyHandle::from(persisted?), false))
    }
}

fn selection(pcrs: &[u8]) -> Result<tss_esapi::structures::PcrSelectionList, TpmDeviceError> {
    let slots = pcrs
        .iter()
        .map(|p| PcrSlot::try_from(1u32 << p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("PCR selection"))?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(err("PCR selection"))
}

/// The hierarchy handle a primary key's qualified name was derived from:
/// `QN = nameAlg ‖ H(hierarchy ‖ name)`. `None` for a key with another parent
/// (a persistent AK provisioned by someone else), whose parent we cannot know.
fn primary_parent(name: &[u8], qualified_name: &[u8]) -> Option<Vec<u8>> {
    const SHA256: [u8; 2] = [0x00, 0x0b];
    if qualified_name.get(..2) != Some(SHA256.as_slice()) {
        return None;
    }
    [0x4000_000b_u32, 0x4000_0001, 0x4000_000c, 0x4000_0007]
        .iter()
        .map(|h| h.to_be_bytes())
        .find(|h| {
            let d = Sha256::new().chain_update(h).chain_update(name).finalize();
            qualified_name[2..] == d[..]
        })
        .map(|h| h.to_vec())
}

/// DER SubjectPublicKeyInfo of a TPM public key.
fn spki_der(public: &Public) -> Result<Vec<u8>, TpmDeviceError> {
    let bad = |r: String| TpmDeviceError::new("AK public key", r);
    match public {
        Public::Rsa {
            parameters, unique, ..
        } => {
            let e = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            let key = rsa::PublicKey::new(
                rsa::BoxedUint::from_be_slice_vartime(unique.value()),
                rsa::BoxedUint::from(e),
            )
            .map_err(|e| bad(e.to_string()))?;
            let der = key.to_public_key_der().map_err(|e| bad(e.to_string()))?;
            Ok(der.as_bytes().to_vec())
        }
        Public::Ecc { unique, .. } => {
            let (x, y) = (unique.x().value(), unique.y().value());
            if x.len() > 32 || y.len() > 32 {
                return Err(bad("ECC point is not on a 256-bit curve".into()));
            }
            let mut point = [0u8; 65];
            point[0] = 0x04;
            point[33 - x.len()..33].copy_from_slice(x);
            point[65 - y.len()..].copy_from_slice(y);
            let key = p256::PublicKey::from_sec1_bytes(&point).map_err(|e| bad(e.to_string()))?;
            let der = key.to_public_key_der().map_err(|e| bad(e.to_string()))?;
            Ok(der.as_bytes().to_vec())
        }
        _ => Err(bad("AK is neither RSA nor ECC".into())),
    }
}

impl TpmDevice for EsapiTpm {
    fn quote(&self, qualifying_data: &[u8], pcrs: &[u8]) -> Result<RawQuote, TpmDeviceError> {
        let mut ctx = self.context()?;
        let (ak, transient) = self.ak(&mut ctx)?;
        let result = (|| {
            let (public, name, qualified_name) = ctx.read_public(ak).map_err(err("read AK"))?;
            let data = Data::try_from(qualifying_data.to_vec()).map_err(err("qualifying data"))?;
            let sel = selection(pcrs)?;
            let (attest, signature) = ctx
                .execute_with_nullauth_session(|c| c.quote(ak, data, SignatureScheme::Null, sel))
                .map_err(err("quote"))?;
            let AttestInfo::Quote { info } = attest.attested() else {
                return Err(TpmDeviceError::new(
                    "quote",
                    "TPM returned a non-quote attestation",
                ));
            };
            Ok(RawQuote {
                pcr_digest: info.pcr_digest().value().to_vec(),
                attest: attest.marshall().map_err(err("marshal attest"))?,
                signature: signature.marshall().map_err(err("marshal signature"))?,
                ak_spki_der: spki_der(&public)?,
                ak_tpm_public: public.marshall().map_err(err("marshal AK"))?,
                ak_parent_qualified_name: primary_parent(name.value(), qualified_name.value()),
            })
        })();
        if transient {
            ctx.flush_context(ObjectHandle::from(ak))
                .map_err(err("flush AK"))?;
        }
        result
    }

    fn read_pcrs(&self, pcrs: &[u8]) -> Result<Vec<[u8; 32]>, TpmDeviceError> {
        let mut ctx = self.context()?;
        let data = tss_esapi::abstraction::pcr::read_all(&mut ctx, selection(pcrs)?)
            .map_err(err("PCR read"))?;
        let bank = data
            .pcr_bank(HashingAlgorithm::Sha256)
            .ok_or_else(|| TpmDeviceError::new("PCR read", "no SHA-256 bank"))?;
        pcrs.iter()
            .map(|p| {
                let slot = PcrSlot::try_from(1u32 << p).map_err(err("PCR read"))?;
                let d = bank
                    .get_digest(slot)
                    .ok_or_else(|| TpmDeviceError::new("PCR read", format!("PCR {p} missing")))?;
                <[u8; 32]>::try_from(d.value())
                    .map_err(|_| TpmDeviceError::new("PCR read", "SHA-256 PCR is not 32 bytes"))
            })
            .collect()
    }

    fn extend_pcr(&self, pcr: u8, digest: &[u8; 32]) -> Result<(), TpmDeviceError> {
        let mut ctx = self.context()?;
        let handle = PcrHandle::try_from(ObjectHandle::from(
            tss_esapi::tss2_esys::ESYS_TR_PCR0 + u32::from(pcr),
        ))
        .map_err(err("PCR handle"))?;
        let mut values = DigestValues::new();
        values.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(digest.to_vec()).map_err(err("PCR extend"))?,
        );
        ctx.execute_with_nullauth_session(|c| c.pcr_extend(handle, values))
            .map_err(err("PCR extend"))
    }
}
