//! all-MiniLM-L6-v2's weights, read out of `model.safetensors` into plain `Vec<f32>`s with
//! every shape checked, so the forward pass can index without further validation.

use safetensors::{Dtype, SafeTensors};

use crate::EmbedError;
use crate::dense::Dense;

/// Hidden size (the embedding dimension).
pub(crate) const HIDDEN: usize = 384;
/// Attention heads per layer.
pub(crate) const HEADS: usize = 12;
/// Width of one head.
pub(crate) const HEAD_DIM: usize = HIDDEN / HEADS;
/// Feed-forward width.
pub(crate) const FFN: usize = 1536;
/// Transformer layers.
pub(crate) const LAYERS: usize = 6;
/// Learned positions; inputs are truncated well below this.
pub(crate) const MAX_POSITIONS: usize = 512;
/// Word-piece vocabulary size.
pub(crate) const VOCAB: usize = 30522;
/// LayerNorm epsilon from the model's `config.json`.
pub(crate) const LN_EPS: f32 = 1e-12;

/// Scale and shift of a LayerNorm.
pub(crate) struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// One encoder layer. Query, key and value are fused into one `3·HIDDEN × HIDDEN` matrix so
/// they cost one GEMM instead of three.
pub(crate) struct Layer {
    pub qkv: Dense,
    pub attn_out: Dense,
    pub attn_ln: LayerNorm,
    pub ffn_in: Dense,
    pub ffn_out: Dense,
    pub ffn_ln: LayerNorm,
}

/// The whole encoder. The pooler head is not loaded: sentence-transformers mean-pools the
/// last hidden state instead.
pub(crate) struct Bert {
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    /// Row 0 of the token-type table: every token is type 0 for single sentences.
    pub token_type0: Vec<f32>,
    pub emb_ln: LayerNorm,
    pub layers: Vec<Layer>,
}

impl Bert {
    /// Reads the encoder out of the bytes of a safetensors file.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, EmbedError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| EmbedError::Weights(e.to_string()))?;
        let get = |name: &str, shape: &[usize]| tensor(&st, name, shape);
        let ln = |prefix: &str| -> Result<LayerNorm, EmbedError> {
            Ok(LayerNorm {
                gamma: get(&format!("{prefix}.weight"), &[HIDDEN])?,
                beta: get(&format!("{prefix}.bias"), &[HIDDEN])?,
            })
        };
        // PyTorch's Linear: weight `out × in`, bias `out`.
        let raw =
            |prefix: &str, out: usize, inp: usize| -> Result<(Vec<f32>, Vec<f32>), EmbedError> {
                Ok((
                    get(&format!("{prefix}.weight"), &[out, inp])?,
                    get(&format!("{prefix}.bias"), &[out])?,
                ))
            };
        let linear = |prefix: &str, out: usize, inp: usize| -> Result<Dense, EmbedError> {
            let (w, b) = raw(prefix, out, inp)?;
            Ok(Dense::new(&w, b, out, inp))
        };
        let mut layers = Vec::with_capacity(LAYERS);
        for i in 0..LAYERS {
            let p = format!("encoder.layer.{i}");
            let (q, k, v) = (
                raw(&format!("{p}.attention.self.query"), HIDDEN, HIDDEN)?,
                raw(&format!("{p}.attention.self.key"), HIDDEN, HIDDEN)?,
                raw(&format!("{p}.attention.self.value"), HIDDEN, HIDDEN)?,
            );
            let qkv = Dense::new(
                &[q.0, k.0, v.0].concat(),
                [q.1, k.1, v.1].concat(),
                3 * HIDDEN,
                HIDDEN,
            );
            layers.push(Layer {
                qkv,
                attn_out: linear(&format!("{p}.attention.output.dense"), HIDDEN, HIDDEN)?,
                attn_ln: ln(&format!("{p}.attention.output.LayerNorm"))?,
                ffn_in: linear(&format!("{p}.intermediate.dense"), FFN, HIDDEN)?,
                ffn_out: linear(&format!("{p}.output.dense"), HIDDEN, FFN)?,
                ffn_ln: ln(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let mut token_type = get("embeddings.token_type_embeddings.weight", &[2, HIDDEN])?;
        token_type.truncate(HIDDEN);
        Ok(Self {
            word: get("embeddings.word_embeddings.weight", &[VOCAB, HIDDEN])?,
            position: get(
                "embeddings.position_embeddings.weight",
                &[MAX_POSITIONS, HIDDEN],
            )?,
            token_type0: token_type,
            emb_ln: ln("embeddings.LayerNorm")?,
            layers,
        })
    }
}

/// One f32 tensor of the expected shape, copied out of the (possibly unaligned) file bytes.
fn tensor(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
    let view = st
        .tensor(name)
        .map_err(|e| EmbedError::Weights(format!("{name}: {e}")))?;
    if view.dtype() != Dtype::F32 || view.shape() != shape {
        return Err(EmbedError::Weights(format!(
            "{name}: expected F32 {shape:?}, found {:?} {:?}",
            view.dtype(),
            view.shape()
        )));
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
