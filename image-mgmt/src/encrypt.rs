//! Host-side image encryption on an OCI image layout, compatible with
//! ocicrypt: each plain layer is encrypted with a fresh AES-256-CTR key whose
//! options are wrapped for JWE recipients and/or the `attestation-agent`
//! keyprovider (KEK held by the KBS).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::digest::{HashingReader, Sha256Digest};
use crate::error::{Error, IoContext, Result};
use crate::ocicrypt::cipher::{EncryptWriter, LayerKey};
use crate::ocicrypt::keyprovider::{AnnotationPacket, PROVIDER_NAME};
use crate::ocicrypt::keys::PublicKey;
use crate::ocicrypt::{
    jwe, layer_options, split_encrypted, ANN_JWE, ANN_PROVIDER_PREFIX, ANN_PUBOPTS,
    ENCRYPTED_SUFFIX,
};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Who may decrypt the layers.
#[derive(Debug, Clone, Default)]
pub struct Recipients {
    pub jwe: Vec<PublicKey>,
    /// KEK and its `kbs:///repo/type/tag` id for the `attestation-agent` scheme.
    pub provider: Option<(zeroize::Zeroizing<Vec<u8>>, String)>,
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("index.json").is_file() {
            return Err(Error::Manifest(format!(
                "{} is not an OCI layout",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn blob_path(&self, d: &Sha256Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(d.hex())
    }

    fn read_json(&self, d: &Sha256Digest) -> Result<Value> {
        let data = std::fs::read(self.blob_path(d)).ctx(|| format!("reading blob {d}"))?;
        d.verify(&Sha256Digest::of(&data), "layout blob")?;
        serde_json::from_slice(&data).map_err(|e| Error::Manifest(format!("{d}: {e}")))
    }

    fn write_blob(&self, data: &[u8]) -> Result<Sha256Digest> {
        let d = Sha256Digest::of(data);
        std::fs::write(self.blob_path(&d), data).ctx(|| format!("writing blob {d}"))?;
        Ok(d)
    }

    fn index(&self) -> Result<Value> {
        let p = self.dir.join("index.json");
        let data = std::fs::read(&p).ctx(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&data).map_err(|e| Error::Manifest(format!("index.json: {e}")))
    }

    /// The manifest descriptor tagged `tag`.
    fn find(&self, tag: &str) -> Result<Value> {
        let idx = self.index()?;
        idx["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag))
            .cloned()
            .ok_or_else(|| Error::Manifest(format!("no manifest tagged {tag:?} in the layout")))
    }

    /// Points `tag` at `desc` (replacing an existing entry of that tag).
    fn set_tag(&self, tag: &str, mut desc: Value) -> Result<()> {
        let mut idx = self.index()?;
        desc["annotations"] = json!({ REF_NAME: tag });
        let list = idx["manifests"]
            .as_array_mut()
            .ok_or_else(|| Error::Manifest("index.json without manifests".into()))?;
        list.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
        list.push(desc);
        let p = self.dir.join("index.json");
        let tmp = self.dir.join("index.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(&idx).map_err(|e| Error::Manifest(e.to_string()))?,
        )
        .ctx(|| "writing index.json".into())?;
        std::fs::rename(&tmp, &p).ctx(|| "replacing index.json".into())
    }
}

/// Encrypts every plain layer of `src_tag` into `dst_tag` (same layout).
/// Returns the new manifest digest.
pub fn encrypt_layout(
    layout: &Layout,
    src_tag: &str,
    dst_tag: &str,
    to: &Recipients,
) -> Result<Sha256Digest> {
    if to.jwe.is_empty() && to.provider.is_none() {
        return Err(Error::Key(
            "no recipients: give JWE public keys and/or a KEK".into(),
        ));
    }
    let desc = layout.find(src_tag)?;
    let mdigest = Sha256Digest::parse(desc["digest"].as_str().unwrap_or_default())?;
    let mut manifest = layout.read_json(&mdigest)?;
    let layers = manifest["layers"]
        .as_array_mut()
        .ok_or_else(|| Error::Manifest("manifest without layers".into()))?;
    for layer in layers.iter_mut() {
        let mt = layer["mediaType"].as_str().unwrap_or_default().to_owned();
        if split_encrypted(&mt).1 {
            continue;
        }
        let d = Sha256Digest::parse(layer["digest"].as_str().unwrap_or_default())?;
        let (new_digest, size, annotations) = encrypt_blob(layout, &d, to)?;
        layer["mediaType"] = Value::String(format!("{mt}{ENCRYPTED_SUFFIX}"));
        layer["digest"] = Value::String(new_digest.to_string());
        layer["size"] = json!(size);
        let mut ann = layer["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in annotations {
            ann.insert(k, Value::String(v));
        }
        layer["annotations"] = Value::Object(ann);
        tracing::info!(layer = %d, encrypted = %new_digest, "layer encrypted");
    }
    let raw = serde_json::to_vec(&manifest).map_err(|e| Error::Manifest(e.to_string()))?;
    let nd = layout.write_blob(&raw)?;
    layout.set_tag(
        dst_tag,
        json!({
            "mediaType": manifest["mediaType"].as_str().unwrap_or(crate::registry::MT_OCI_MANIFEST),
            "digest": nd.to_string(),
            "size": raw.len(),
        }),
    )?;
    Ok(nd)
}

/// Streams one blob through the layer cipher into a new blob.
fn encrypt_blob(
    layout: &Layout,
    d: &Sha256Digest,
    to: &Recipients,
) -> Result<(Sha256Digest, u64, BTreeMap<String, String>)> {
    let key = LayerKey::generate()?;
    let src = File::open(layout.blob_path(d)).ctx(|| format!("opening blob {d}"))?;
    let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, src));
    let tmp = layout
        .dir
        .join("blobs")
        .join("sha256")
        .join(format!(".encrypting-{}", d.hex()));
    let out = File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let hashing = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, out),
        hasher: Sha256::new(),
        count: 0,
    };
    let mut w = EncryptWriter::new(hashing, &key);
    io::copy(&mut reader, &mut w).ctx(|| format!("encrypting {d}"))?;
    let (hw, hmac) = w.finish().ctx(|| "flushing encrypted blob".into())?;
    let (plain, _, _) = reader.finish();
    plain.verify(d, "source layer")?;
    let new_digest = Sha256Digest::from_hasher(hw.hasher);
    let size = hw.count;
    hw.inner
        .into_inner()
        .map_err(|e| Error::Io {
            context: "flushing encrypted blob".into(),
            source: e.into_error(),
        })?
        .sync_all()
        .ctx(|| "syncing encrypted blob".into())?;
    std::fs::rename(&tmp, layout.blob_path(&new_digest)).ctx(|| "naming encrypted blob".into())?;

    let (pubopts, private) = layer_options(&key, hmac, &plain)?;
    let mut ann = BTreeMap::new();
    ann.insert(ANN_PUBOPTS.to_owned(), pubopts);
    if !to.jwe.is_empty() {
        let j = jwe::encrypt(&private, &to.jwe)?;
        ann.insert(ANN_JWE.to_owned(), STANDARD.encode(j));
    }
    if let Some((kek, kid)) = &to.provider {
        let packet = AnnotationPacket::wrap(&private, kek, kid)?;
        ann.insert(
            format!("{ANN_PROVIDER_PREFIX}{PROVIDER_NAME}"),
            STANDARD.encode(packet.to_json()?),
        );
    }
    Ok((new_digest, size, ann))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a whole small file (a key), for the CLI.
pub fn read_small(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut v = Vec::new();
    Read::take(&mut f, 1 << 20)
        .read_to_end(&mut v)
        .ctx(|| format!("reading {}", path.display()))?;
    Ok(zeroize::Zeroizing::new(v))
}
