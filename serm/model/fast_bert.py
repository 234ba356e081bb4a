"""An inference-only forward pass of a `BertForSequenceClassification`, for scoring.

It reads the same parameters as the HF module and computes the same function (checked against
`model(**batch).logits` in tests/test_scoring_equivalence.py), with less work:

- the classifier reads only the [CLS] row, so the last layer computes keys and values for every
  token but its query, attention output and feed-forward for [CLS] alone (about 1/7 of the
  encoder's multiply-adds on a 6-layer model);
- one fused query/key/value matmul per layer instead of three;
- no attention mask when a batch has no padding (length-sorted batches mostly have none), so SDPA
  takes its unmasked kernel;
- none of the HF wrapper machinery (output capture, mask builders, kwargs plumbing) per call.

`BertScorer.for_model(net)` returns None for anything this does not cover (other architectures,
relative position embeddings, a decoder, a module in train mode, forward hooks): callers then
use the HF forward.

`dropout=True` samples the network as in train mode (Monte Carlo dropout, for the miner's
`disagreement` committee): dropout on the embeddings, the attention probabilities, after each
attention and feed-forward projection and before the classifier, at the model's configured
rates, exactly where BERT applies it.

`int8=True` (`model.precision: int8`, CPU only) runs every encoder linear layer, the fused
query/key/value one included, as a dynamically quantized int8 matmul: weights quantized once per
output channel (symmetric, scale = max |w| / 127), activations quantized per batch on the fly
(torch's fbgemm/x86 `quantized::linear_dynamic`, int32 accumulation). Embeddings, layer norms,
attention, the pooler and the classifier stay fp32. It is 2.2-2.5x the fp32 path's pairs/s on a
2-core AVX2 machine, with grades close to fp32's but not identical (Spearman of the expected grade
0.99 on 5,107 Home Depot pairs; tests/serm/model/test_scoring_equivalence.py bounds it).
"""

from __future__ import annotations


def _has_hooks(net) -> bool:
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m.training for m in net.modules())


class _Linear:
    """`x @ w.T + b` in fp32."""

    def __init__(self, weight, bias):
        self.weight, self.bias = weight.detach(), bias.detach()

    def __call__(self, x):
        import torch.nn.functional as F

        return F.linear(x, self.weight, self.bias)


class _Int8Linear:
    """`x @ w.T + b` with w int8 per output channel and x quantized per call (dynamic int8)."""

    def __init__(self, weight, bias):
        import warnings

        import torch

        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        with warnings.catch_warnings():   # quantized tensor creation: deprecated for a later torch, present in 2.13
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qw, bias.detach().float())

    def __call__(self, x):
        import torch

        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).contiguous(), self.packed, False)
        return y.view(*shape[:-1], y.shape[-1])


def int8_available() -> bool:
    """Whether this torch build has the dynamic int8 linear kernel `precision: int8` runs on."""
    try:
        import torch

        engines = set(torch.backends.quantized.supported_engines)
        return hasattr(torch.ops.quantized, "linear_dynamic") and bool(engines & {"x86", "fbgemm", "onednn"})
    except Exception:  # pragma: no cover - an odd torch build
        return False


class BertScorer:
    """Logits of a BERT cross-encoder from padded `input_ids`/`token_type_ids` and row lengths."""

    def __init__(self, net, dropout: bool = False, int8: bool = False):
        import torch

        bert = net.bert
        self.net = net
        cfg = net.config
        self.p_hidden = cfg.hidden_dropout_prob if dropout else 0.0
        self.p_attn = cfg.attention_probs_dropout_prob if dropout else 0.0
        cls_p = getattr(cfg, "classifier_dropout", None)
        self.p_cls = (cfg.hidden_dropout_prob if cls_p is None else cls_p) if dropout else 0.0
        self.emb = bert.embeddings
        self.heads = net.config.num_attention_heads
        self.hidden = net.config.hidden_size
        self.int8 = int8
        linear = _Int8Linear if int8 else _Linear
        h = self.hidden
        self.layers = []
        last = len(bert.encoder.layer) - 1
        for i, layer in enumerate(bert.encoder.layer):
            att = layer.attention.self
            # Built per scorer, so a model trained in between is read afresh (RelevanceModel
            # keeps an int8 scorer only while the parameters are unchanged).
            w_qkv = torch.cat([att.query.weight, att.key.weight, att.value.weight]).detach()
            b_qkv = torch.cat([att.query.bias, att.key.bias, att.value.bias]).detach()
            if i < last:
                qkv = (linear(w_qkv, b_qkv),)
            else:  # [CLS]'s query alone, every token's keys and values
                qkv = (linear(w_qkv[:h], b_qkv[:h]), linear(w_qkv[h:], b_qkv[h:]))
            out = layer.output
            self.layers.append((qkv, getattr(att, "scaling", att.attention_head_size ** -0.5),
                                linear(layer.attention.output.dense.weight, layer.attention.output.dense.bias),
                                layer.attention.output.LayerNorm,
                                linear(layer.intermediate.dense.weight, layer.intermediate.dense.bias),
                                layer.intermediate.intermediate_act_fn,
                                linear(out.dense.weight, out.dense.bias), out.LayerNorm))

    @classmethod
    def for_model(cls, net, dropout: bool = False, int8: bool = False):
        """A scorer for `net`, or None where the HF forward must be used."""
        try:
            from transformers import BertForSequenceClassification
        except ImportError:  # pragma: no cover - transformers is a core dependency
            return None
        cfg = net.config
        if type(net) is not BertForSequenceClassification or net.bert.pooler is None:
            return None
        if cfg.is_decoder or getattr(cfg, "position_embedding_type", "absolute") != "absolute":
            return None
        if _has_hooks(net):
            return None
        return cls(net, dropout, int8)

    def __call__(self, input_ids, token_type_ids, lengths):
        """`lengths` (a CPU int tensor) gives each row's real tokens; rows are right-padded."""
        import torch
        import torch.nn.functional as F

        b, s = input_ids.shape
        h, nh = self.hidden, self.heads
        emb = self.emb
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Same order of additions as BertEmbeddings, for the same rounding.
        x = emb.word_embeddings(input_ids) + emb.token_type_embeddings(token_type_ids)
        x = x + emb.position_embeddings.weight[:s]
        x = F.layer_norm(x, (h,), emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps)
        drop = self._drop
        x = drop(x, self.p_hidden)
        mask = None
        if int(lengths.min()) < s:
            mask = (torch.arange(s) < lengths[:, None]).to(input_ids.device)[:, None, None, :]
        last = len(self.layers) - 1
        for i, (qkv, scale, att_dense, att_norm, inter_dense, act, out_dense, out_norm) in enumerate(self.layers):
            if i < last:
                q, k, v = qkv[0](x).view(b, s, 3, nh, -1).permute(2, 0, 3, 1, 4)
                resid = x
            else:  # only [CLS] is read after this layer: its query against every key
                k, v = qkv[1](x).view(b, s, 2, nh, -1).permute(2, 0, 3, 1, 4)
                resid = x[:, :1]
                q = qkv[0](resid).view(b, 1, nh, -1).transpose(1, 2)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p_attn, scale=scale)
            ctx = ctx.transpose(1, 2).reshape(b, -1, h)
            x = att_norm(drop(att_dense(ctx), self.p_hidden) + resid)
            x = out_norm(drop(out_dense(act(inter_dense(x))), self.p_hidden) + x)
        pooled = self.net.bert.pooler(x)
        return self.net.classifier(drop(pooled, self.p_cls))

    @staticmethod
    def _drop(x, p: float):
        import torch.nn.functional as F

        return F.dropout(x, p, training=True) if p > 0 else x
