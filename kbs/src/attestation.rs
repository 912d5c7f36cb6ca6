//! The attestation service: verify evidence, then appraise the claims with the
//! attestation policy against the registered reference values.

use crate::policy::{CompiledPolicy, PolicyError};
use crate::storage::{Key, Store, StoreError};
use crate::verifier::{Expected, VerifierError, Verifiers};
use kbs_types::Tee;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// Built-in modules of the `default` attestation policy (replaced as a whole
/// when an admin uploads a policy with id `default`).
pub const DEFAULT_ATTESTATION_MODULES: &[(&str, &str)] = &[
    (
        "default.rego",
        include_str!("../policies/attestation/default.rego"),
    ),
    ("snp.rego", include_str!("../policies/attestation/snp.rego")),
    ("tdx.rego", include_str!("../policies/attestation/tdx.rego")),
    ("tpm.rego", include_str!("../policies/attestation/tpm.rego")),
];

/// The rule giving the appraisal in our policies.
const STATUS_RULE: &str = "data.policy.status";
/// The rule giving the AR4SI trust vector in Trustee's (EAR) policies
/// (`attestation-service/src/ear_token/broker.rs` @78962cd).
const TRUST_CLAIMS_RULE: &str = "data.policy.trust_claims";
/// The AR4SI trust claims an EAR trust vector has (ear 0.5 `TrustVector`).
const TRUST_CLAIM_NAMES: &[&str] = &[
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
];
/// Trustee's name for the CPU-class policy of policy set `<id>` is
/// `<id>_cpu`; all our evidence is CPU-class, so both names are one policy.
const CPU_CLASS_SUFFIX: &str = "_cpu";

/// Reference values: name → the JSON value registered (Trustee's RVPS model:
/// usually a list of accepted values, possibly a single value).
pub type ReferenceValues = BTreeMap<String, Value>;

/// The policy id `id` names: `default_cpu` is `default`.
pub fn canonical_policy_id(id: &str) -> &str {
    match id.strip_suffix(CPU_CLASS_SUFFIX) {
        Some(base) if !base.is_empty() => base,
        _ => id,
    }
}

/// How a policy gives its appraisal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `data.policy.status` = "affirming" | "warning" | "contraindicated".
    Status,
    /// `data.policy.trust_claims` = {claim: AR4SI value}; the status is the
    /// worst tier of its claims, as the EAR library computes it.
    TrustClaims,
}

#[derive(Debug, Clone)]
struct Prepared {
    policy: CompiledPolicy,
    dialect: Dialect,
}

#[derive(Debug, thiserror::Error)]
pub enum AsError {
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("attestation policy `{0}` does not exist")]
    UnknownPolicy(String),
    #[error("stored reference values are corrupt: {0}")]
    CorruptReferenceValues(String),
}

/// The outcome of a successful verification.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// EAR status: affirming, warning or contraindicated (or none, from a
    /// trust-claims policy that asserted nothing).
    pub status: String,
    /// The verified claims as the policy saw them.
    pub claims: Value,
    /// The AR4SI trust vector, from a trust-claims (Trustee EAR) policy.
    pub trust_vector: Option<Value>,
}

#[derive(Debug, Default)]
struct PolicyState {
    sources: HashMap<String, Vec<(String, String)>>,
    compiled: HashMap<String, Prepared>,
    reference: Arc<ReferenceValues>,
}

impl PolicyState {
    fn prepare(&self, modules: &[(String, String)]) -> Result<Prepared, PolicyError> {
        let data = json!({ "reference": reference_view(&self.reference) });
        let policy =
            CompiledPolicy::compile_with_reference(modules, &data, Some(self.reference.clone()))?;
        let dialect = probe(&policy)?;
        Ok(Prepared { policy, dialect })
    }

    fn recompile_all(&mut self) -> Result<(), PolicyError> {
        let mut compiled = HashMap::new();
        for (id, modules) in &self.sources {
            compiled.insert(id.clone(), self.prepare(modules)?);
        }
        self.compiled = compiled;
        Ok(())
    }
}

/// `data.reference` as our policies read it: name → array of strings. A
/// single registered value becomes a one-element array; numbers and booleans
/// their JSON text. Values of other shapes are reachable only through
/// `query_reference_value`.
fn reference_view(values: &ReferenceValues) -> Value {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let mut out = serde_json::Map::new();
    for (name, v) in values {
        let list = match v {
            Value::Array(items) => items.iter().map(text).collect::<Option<Vec<_>>>(),
            other => text(other).map(|t| vec![t]),
        };
        if let Some(list) = list {
            out.insert(name.clone(), json!(list));
        }
    }
    Value::Object(out)
}

/// Inputs a policy is tried on at upload: nothing, and each TEE's input shape
/// with empty claims. A policy whose rule does not exist, or that fails or
/// gives a result of the wrong type on these, is refused before it replaces
/// the one in force.
fn probe(policy: &CompiledPolicy) -> Result<Dialect, PolicyError> {
    let mut inputs = vec![json!({})];
    for tee in ["sample", "snp", "tdx", "tpm"] {
        inputs.push(policy_input(tee, &json!({}), None));
    }
    let mut found = None;
    let mut why = Vec::new();
    for (dialect, rule) in [
        (Dialect::Status, STATUS_RULE),
        (Dialect::TrustClaims, TRUST_CLAIMS_RULE),
    ] {
        match policy.eval(rule, &inputs[0], None) {
            Ok(_) => {
                found = Some(dialect);
                break;
            }
            Err(e) => why.push(format!("{rule}: {e}")),
        }
    }
    let dialect = found.ok_or_else(|| {
        PolicyError::Eval(format!(
            "an attestation policy must define {STATUS_RULE} or {TRUST_CLAIMS_RULE} ({})",
            why.join("; ")
        ))
    })?;
    for input in &inputs {
        match dialect {
            Dialect::Status => {
                status_of(policy, input)?;
            }
            Dialect::TrustClaims => {
                trust_vector_of(policy, input)?;
            }
        }
    }
    Ok(dialect)
}

/// The initdata as the attestation policy (`input.init_data`) and the token
/// (claim `init_data`, so resource policies) see it: `digest` is the lowercase
/// hex of the whole digest with the document's own algorithm, the form of the
/// `init_data_digest` reference value (`coco_jose::initdata::REFERENCE_VALUE`).
pub fn init_data_input(init_data: &coco_jose::binding::InitData) -> Value {
    json!({
        "digest": hex::encode(&init_data.digest),
        "algorithm": init_data.algorithm,
        "data": init_data.data,
    })
}

/// The policy input: ours (`tee`, `claims`, `init_data` from
/// [`init_data_input`] or null) and, under the TEE's name, the claims again,
/// where Trustee's policies look for them (`input.sample`, `input.snp`, ...:
/// its `transform_claims` @78962cd).
pub fn policy_input(tee: &str, claims: &Value, init_data: Option<&Value>) -> Value {
    let mut input = json!({
        "tee": tee,
        "claims": claims,
        "init_data": init_data.cloned().unwrap_or(Value::Null),
    });
    // TEE names (kbs_types::Tee) never collide with the three keys above.
    input[tee] = claims.clone();
    input
}

fn status_of(policy: &CompiledPolicy, input: &Value) -> Result<String, PolicyError> {
    match policy.eval(STATUS_RULE, input, None)? {
        Value::String(s) if matches!(s.as_str(), "affirming" | "warning" | "contraindicated") => {
            Ok(s)
        }
        other => Err(PolicyError::Result {
            rule: STATUS_RULE,
            got: other.to_string(),
            expected: "\"affirming\", \"warning\" or \"contraindicated\"",
        }),
    }
}

/// The trust vector (claim → value) and the EAR status it gives: the worst
/// tier of all claims (-1..=1 none, |v| < 32 affirming, < 96 warning, else
/// contraindicated: ear 0.5 `TrustClaim::tier`). Undefined trust claims set
/// every claim to 0 ("no claim"), as Trustee does.
fn trust_vector_of(policy: &CompiledPolicy, input: &Value) -> Result<(String, Value), PolicyError> {
    let bad = |got: &Value| PolicyError::Result {
        rule: TRUST_CLAIMS_RULE,
        got: got.to_string(),
        expected: "an object of AR4SI trust claims with integer values in -128..=127",
    };
    let v = policy.eval(TRUST_CLAIMS_RULE, input, None)?;
    let claims = match &v {
        Value::Object(m) => m.clone(),
        // regorus serialises an undefined rule as the string "<undefined>".
        undefined if undefined.is_null() || undefined.as_str() == Some("<undefined>") => {
            TRUST_CLAIM_NAMES
                .iter()
                .map(|n| ((*n).to_owned(), json!(0)))
                .collect()
        }
        other => return Err(bad(other)),
    };
    if claims.is_empty() {
        return Err(bad(&v));
    }
    let mut worst = 0u8;
    for (name, value) in &claims {
        if !TRUST_CLAIM_NAMES.contains(&name.as_str()) {
            return Err(bad(&v));
        }
        let n = value
            .as_i64()
            .filter(|n| (-128..=127).contains(n))
            .ok_or_else(|| bad(&v))?;
        let tier = match n {
            -1..=1 => 0,
            -31..=31 => 1,
            -95..=95 => 2,
            _ => 3,
        };
        worst = worst.max(tier);
    }
    let status = ["none", "affirming", "warning", "contraindicated"][usize::from(worst)];
    Ok((status.to_owned(), Value::Object(claims)))
}

#[derive(Debug)]
pub struct AttestationService {
    verifiers: Verifiers,
    store: Arc<dyn Store>,
    policy_id: String,
    state: RwLock<PolicyState>,
}

impl AttestationService {
    /// Load policies and reference values from the store (built-in default
    /// policy when none was uploaded).
    pub fn new(
        verifiers: Verifiers,
        store: Arc<dyn Store>,
        policy_id: &str,
    ) -> Result<Self, AsError> {
        let mut state = PolicyState::default();
        state.sources.insert(
            "default".into(),
            DEFAULT_ATTESTATION_MODULES
                .iter()
                .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
                .collect(),
        );
        for id in store.attestation_policy_ids()? {
            if let Some(src) = store.get(&Key::AttestationPolicy(id.clone()))? {
                let src = String::from_utf8_lossy(&src).into_owned();
                let id = canonical_policy_id(&id).to_owned();
                state
                    .sources
                    .insert(id.clone(), vec![(format!("{id}.rego"), src)]);
            }
        }
        if let Some(raw) = store.get(&Key::ReferenceValues)? {
            state.reference = Arc::new(
                serde_json::from_slice(&raw)
                    .map_err(|e| AsError::CorruptReferenceValues(e.to_string()))?,
            );
        }
        state.recompile_all()?;
        let policy_id = canonical_policy_id(policy_id);
        if !state.compiled.contains_key(policy_id) {
            return Err(AsError::UnknownPolicy(policy_id.to_owned()));
        }
        Ok(Self {
            verifiers,
            store,
            policy_id: policy_id.to_owned(),
            state: RwLock::new(state),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PolicyState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PolicyState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether evidence from `tee` can be verified at all.
    pub fn supports(&self, tee: Tee) -> Result<(), VerifierError> {
        self.verifiers.get(tee).map(|_| ())
    }

    /// Verify `evidence` from `tee` and appraise it. CPU-bound: call it from
    /// the blocking pool.
    pub fn appraise(
        &self,
        tee: Tee,
        evidence: &Value,
        expected: &Expected<'_>,
        init_data: Option<&Value>,
    ) -> Result<Verdict, AsError> {
        let claims = self.verifiers.get(tee)?.verify(evidence, expected)?;
        let claims = serde_json::to_value(&claims)
            .map_err(|e| VerifierError::Malformed(format!("claims do not serialize: {e}")))?;
        let tee_name = tee.to_string();
        let input = policy_input(&tee_name, &claims, init_data);
        let prepared = self
            .read()
            .compiled
            .get(&self.policy_id)
            .cloned()
            .ok_or_else(|| AsError::UnknownPolicy(self.policy_id.clone()))?;
        let (status, trust_vector) = match prepared.dialect {
            Dialect::Status => (status_of(&prepared.policy, &input)?, None),
            Dialect::TrustClaims => {
                let (status, tv) = trust_vector_of(&prepared.policy, &input)?;
                (status, Some(tv))
            }
        };
        Ok(Verdict {
            status,
            claims,
            trust_vector,
        })
    }

    /// Replace attestation policy `id` (`<id>_cpu` names the same policy).
    /// It is compiled and tried first: a policy that does not compile or
    /// cannot be evaluated is refused and the old one stays.
    pub fn set_policy(&self, id: &str, rego: &str) -> Result<(), AsError> {
        let id = canonical_policy_id(id);
        let modules = vec![(format!("{id}.rego"), rego.to_owned())];
        let mut state = self.write();
        let prepared = state.prepare(&modules)?;
        self.store
            .put(&Key::AttestationPolicy(id.to_owned()), rego.as_bytes())?;
        state.sources.insert(id.to_owned(), modules);
        state.compiled.insert(id.to_owned(), prepared);
        Ok(())
    }

    /// The sources of policy `id`.
    pub fn policy(&self, id: &str) -> Option<Vec<(String, String)>> {
        self.read().sources.get(canonical_policy_id(id)).cloned()
    }

    /// Merge reference values (each name's value is replaced) and recompile;
    /// if a policy then fails, nothing changes.
    pub fn set_reference_values(&self, updates: ReferenceValues) -> Result<(), AsError> {
        let mut state = self.write();
        let mut next = (*state.reference).clone();
        next.extend(updates);
        let raw = serde_json::to_vec_pretty(&next)
            .map_err(|e| AsError::CorruptReferenceValues(e.to_string()))?;
        let old = std::mem::replace(&mut state.reference, Arc::new(next));
        if let Err(e) = state.recompile_all() {
            state.reference = old;
            return Err(e.into());
        }
        self.store.put(&Key::ReferenceValues, &raw)?;
        Ok(())
    }

    /// The registered value of one reference value.
    pub fn reference_value(&self, id: &str) -> Option<Value> {
        self.read().reference.get(id).cloned()
    }

    pub fn reference_values(&self) -> ReferenceValues {
        (*self.read().reference).clone()
    }
}
