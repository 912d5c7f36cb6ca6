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

/// The rule giving the appraisal.
const STATUS_RULE: &str = "data.policy.status";

/// Reference values: name → accepted values.
pub type ReferenceValues = BTreeMap<String, Vec<String>>;

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
    /// EAR status: affirming, warning or contraindicated.
    pub status: String,
    /// The verified claims as the policy saw them.
    pub claims: Value,
}

#[derive(Debug, Default)]
struct PolicyState {
    sources: HashMap<String, Vec<(String, String)>>,
    compiled: HashMap<String, CompiledPolicy>,
    reference: ReferenceValues,
}

impl PolicyState {
    fn data(&self) -> Value {
        json!({ "reference": self.reference })
    }

    fn recompile_all(&mut self) -> Result<(), PolicyError> {
        let data = self.data();
        let mut compiled = HashMap::new();
        for (id, modules) in &self.sources {
            compiled.insert(id.clone(), CompiledPolicy::compile(modules, &data)?);
        }
        self.compiled = compiled;
        Ok(())
    }
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
                state
                    .sources
                    .insert(id.clone(), vec![(format!("{id}.rego"), src)]);
            }
        }
        if let Some(raw) = store.get(&Key::ReferenceValues)? {
            state.reference = serde_json::from_slice(&raw)
                .map_err(|e| AsError::CorruptReferenceValues(e.to_string()))?;
        }
        state.recompile_all()?;
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
        let input = json!({
            "tee": tee.to_string(),
            "claims": claims,
            "init_data": init_data.cloned().unwrap_or(Value::Null),
        });
        let policy = self
            .read()
            .compiled
            .get(&self.policy_id)
            .cloned()
            .ok_or_else(|| AsError::UnknownPolicy(self.policy_id.clone()))?;
        let status = match policy.eval(STATUS_RULE, &input, None)? {
            Value::String(s)
                if matches!(s.as_str(), "affirming" | "warning" | "contraindicated") =>
            {
                s
            }
            other => {
                return Err(PolicyError::Result {
                    rule: STATUS_RULE,
                    got: other.to_string(),
                    expected: "\"affirming\", \"warning\" or \"contraindicated\"",
                }
                .into())
            }
        };
        Ok(Verdict { status, claims })
    }

    /// Replace attestation policy `id` (compiled first: a broken policy is
    /// refused and the old one stays).
    pub fn set_policy(&self, id: &str, rego: &str) -> Result<(), AsError> {
        let modules = vec![(format!("{id}.rego"), rego.to_owned())];
        let mut state = self.write();
        let compiled = CompiledPolicy::compile(&modules, &state.data())?;
        self.store
            .put(&Key::AttestationPolicy(id.to_owned()), rego.as_bytes())?;
        state.sources.insert(id.to_owned(), modules);
        state.compiled.insert(id.to_owned(), compiled);
        Ok(())
    }

    /// The sources of policy `id`.
    pub fn policy(&self, id: &str) -> Option<Vec<(String, String)>> {
        self.read().sources.get(id).cloned()
    }

    /// Merge reference values (each name's list is replaced) and recompile.
    pub fn set_reference_values(&self, updates: ReferenceValues) -> Result<(), AsError> {
        let mut state = self.write();
        let mut next = state.reference.clone();
        next.extend(updates);
        let raw = serde_json::to_vec_pretty(&next)
            .map_err(|e| AsError::CorruptReferenceValues(e.to_string()))?;
        let old = std::mem::replace(&mut state.reference, next);
        if let Err(e) = state.recompile_all() {
            state.reference = old;
            return Err(e.into());
        }
        self.store.put(&Key::ReferenceValues, &raw)?;
        Ok(())
    }

    pub fn reference_values(&self) -> ReferenceValues {
        self.read().reference.clone()
    }
}
