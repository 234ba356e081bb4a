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
rates, exactly where BERT applies it. `dropout_layers=N` samples only the last N encoder layers
and the classifier (last-layers MC dropout): the layers below are deterministic, so
`scorer(..., passes=P)` runs them once and draws P samples from their output.

`int8=True` (`model.precision: int8`, CPU only) runs every encoder linear layer, the fused
query/key/value one included, as a dynamically quantized int8 matmul: weights quantized once per
output channel (symmetric, scale = max |w| / 127), activations quantized per batch on the fly
(torch's `quantized::linear_dynamic`, weights packed for oneDNN where available, int32
accumulation). Each feed-forward linear keeps its four largest input channels (found once per model,
`outlier_channels`) out of the quantized product, in fp32. Embeddings, layer norms, attention,
the pooler and the classifier stay fp32. It is 2.2-2.5x the fp32 path's pairs/s on 2 cores,
with grades close to fp32's but not identical (Spearman of the expected grade 0.997 on 5,003
Home Depot pairs; tests/serm/model/test_scoring_equivalence.py bounds it).
"""

from __future__ import annotations

import contextlib

# Input channels kept in fp32 on the int8 path (see `_Int8Linear`), and the layers that do so:
# the feed-forward's two linears, where the measured int8 error is (keeping the attention's
# outliers too changed nothing measurable and costs time). Four per layer, not one: on 5,003
# Home Depot pairs Spearman to fp32 0.9962 -> 0.9974, queries whose NDCG@4 moved 191 -> 139 of
# 704, at the same pairs/s (docs/benchmarks.md, "What the int8 path does").
INT8_OUTLIERS = 4
INT8_OUTLIER_LAYERS = ("inter", "out")
# Sequences up to this many tokens take `_short_attention` instead of SDPA.
SHORT_ATTENTION = 32


def _has_hooks(net) -> bool:
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m.training for m in net.modules())


def _plain_bert(net) -> bool:
    """An encoder-only BERT with absolute positions and no hooks: what `BertScorer` computes."""
    cfg = net.config
    return (not cfg.is_decoder and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
            and not _has_hooks(net))


class _Linear:
    """`x @ w.T + b` in fp32."""

    def __init__(self, weight, bias):
        self.weight, self.bias = weight.detach(), bias.detach()

    def __call__(self, x):
        import torch.nn.functional as F

        return F.linear(x, self.weight, self.bias)


class _Int8Linear:
    """`x @ w.T + b` with w int8 per output channel and x quantized per call (dynamic int8).

    `outliers` names input channels kept out of the int8 product: their columns are computed in
    fp32 (a rank-k update) and zeroed in x before it is quantized, so one channel that carries
    values 5-10x the others (BERT's "massive activations") does not set the whole batch's
    quantization step. `inplace` allows zeroing them in x itself (x is not read afterwards).
    """

    def __init__(self, weight, bias, outliers=None, inplace: bool = False):
        import warnings

        import torch

        w = weight.detach().float().clone()
        self.outliers, self.inplace, self.w_out = None, inplace, None
        if outliers is not None and len(outliers):
            self.outliers = torch.as_tensor(outliers, dtype=torch.long)
            self.w_out = w[:, self.outliers].t().contiguous()
            w[:, self.outliers] = 0.0
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        with warnings.catch_warnings(), _quantized_engine(_best_engine()):
            warnings.simplefilter("ignore")   # quantized tensor creation: deprecated for a later torch, present in 2.13
            qw = torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qw, bias.detach().float())

    def __call__(self, x):
        import torch

        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if self.outliers is None:
            y = torch.ops.quantized.linear_dynamic(x.contiguous(), self.packed, False)
        else:
            x_out = x.index_select(1, self.outliers)
            x = x.contiguous() if self.inplace else x.clone()
            x.index_fill_(1, self.outliers, 0.0)
            y = torch.ops.quantized.linear_dynamic(x, self.packed, False)
            y.addmm_(x_out, self.w_out)
        return y.view(*shape[:-1], y.shape[-1])


def outlier_channels(net, k: int, kinds=("qkv", "att", "inter", "out")) -> dict:
    """The `k` input channels of largest magnitude of the input of each encoder linear layer of
    the given `kinds`, per layer, found by one fp32 pass over a fixed calibration batch: 32 rows of 48 token ids drawn
    from the vocabulary by a seeded generator, laid out as `[CLS] query [SEP] document [SEP]`.
    Deterministic for given weights; the outlier channels are a property of the weights (the
    same ones show up on Home Depot and XQuAD inputs), not of the text.
    """
    import torch

    cfg = net.config
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, cfg.vocab_size - 1), cfg.vocab_size, (32, 48), generator=gen)
    cls_id = cfg.bos_token_id if getattr(cfg, "bos_token_id", None) is not None else 101
    sep_id = cfg.eos_token_id if getattr(cfg, "eos_token_id", None) is not None else 102
    ids[:, 0], ids[:, 12], ids[:, -1] = cls_id, sep_id, sep_id
    types = torch.zeros_like(ids)
    types[:, 13:] = 1
    found, hooks = {}, []

    def record(name):
        def hook(_module, inputs, _output):
            x = inputs[0].detach()
            found[name] = x.reshape(-1, x.shape[-1]).abs().amax(0).topk(k).indices.sort().values
        return hook

    bert = getattr(net, "bert", net)
    for i, layer in enumerate(bert.encoder.layer):
        inputs_of = {"qkv": layer.attention.self.query, "att": layer.attention.output.dense,
                     "inter": layer.intermediate.dense, "out": layer.output.dense}
        hooks += [inputs_of[kind].register_forward_hook(record((kind, i))) for kind in kinds]
    try:
        with torch.inference_mode():
            bert(input_ids=ids.to(net.device), token_type_ids=types.to(net.device))
    finally:
        for h in hooks:
            h.remove()
    return {key: v.cpu() for key, v in found.items()}


def _best_engine() -> str | None:
    """The quantized engine to pack weights for: oneDNN on a CPU with VNNI (2.1-2.4x fbgemm's
    speed on BERT's 384->1536 shape on an AVX-512 VNNI EPYC; same on 1536->384), else x86/fbgemm.
    Packed weights carry their engine, so the process-wide engine setting is left alone."""
    import torch

    engines = set(torch.backends.quantized.supported_engines)
    # oneDNN's u8s8 kernels without VNNI may saturate (torch's qconfig warns about it): there,
    # fbgemm's kernels, which the x86 engine picks.
    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
    order = ("onednn", "x86", "fbgemm") if vnni else ("x86", "fbgemm")
    return next((e for e in order if e in engines), None)


@contextlib.contextmanager
def _quantized_engine(engine):
    """torch's quantized engine set to `engine` for the block (prepacking), then restored."""
    import torch

    saved = torch.backends.quantized.engine
    if engine:
        torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = saved


def int8_available() -> bool:
    """Whether this torch build has the dynamic int8 linear kernel `precision: int8` runs on."""
    try:
        import torch

        engines = set(torch.backends.quantized.supported_engines)
        return hasattr(torch.ops.quantized, "linear_dynamic") and bool(engines & {"x86", "fbgemm", "onednn"})
    except Exception:  # pragma: no cover - an odd torch build
        return False


def _short_attention(q, k, v, mask, p_attn: float, scale: float):
    """softmax(q k^T * scale + mask) v as two batched matmuls over every (row, head): on short
    sequences this beats SDPA's CPU kernel, whose per-block scheduling dominates there (~2x at 24
    tokens, ~1.2x at 32, level at 48, on 2 cores). Same function; `mask` is SDPA's boolean one."""
    import torch
    import torch.nn.functional as F

    b, nh, sq, d = q.shape
    s = k.shape[2]
    w = torch.bmm(q.reshape(b * nh, sq, d), k.reshape(b * nh, s, d).transpose(1, 2)).view(b, nh, sq, s)
    w = w * scale
    if mask is not None:
        w = w.masked_fill(~mask, float("-inf"))
    w = w.softmax(-1)
    if p_attn > 0:
        w = F.dropout(w, p_attn, training=True)
    return torch.bmm(w.view(b * nh, sq, s), v.reshape(b * nh, s, d)).view(b, nh, sq, d)


class BertScorer:
    """Logits of a BERT cross-encoder from padded `input_ids`/`token_type_ids` and row lengths."""

    def __init__(self, net, dropout: bool = False, int8: bool = False, dropout_layers: int | None = None):
        import torch

        # A bare BertModel (the embedders' encoder) yields every token's last hidden state; a
        # classifier reads [CLS] alone, so its last layer is computed for [CLS] only.
        self.encoder_only = not hasattr(net, "bert")
        bert = net if self.encoder_only else net.bert
        self.net = net
        cfg = net.config
        self.p_hidden = cfg.hidden_dropout_prob if dropout else 0.0
        self.p_attn = cfg.attention_probs_dropout_prob if dropout else 0.0
        cls_p = getattr(cfg, "classifier_dropout", None)
        self.p_cls = (cfg.hidden_dropout_prob if cls_p is None else cls_p) if dropout else 0.0
        # Layers from this index on are sampled under dropout; 0 samples the embeddings too.
        n_layers = len(bert.encoder.layer)
        if dropout_layers is not None and dropout_layers < 1:
            raise ValueError(f"dropout_layers must be at least 1 (None samples every layer), got {dropout_layers}")
        sampled = n_layers if dropout_layers is None else min(dropout_layers, n_layers)
        self.sampled_from = n_layers - sampled if dropout else n_layers
        self.emb = bert.embeddings
        self.heads = net.config.num_attention_heads
        self.hidden = net.config.hidden_size
        self.int8 = int8
        outliers = outlier_channels(net, INT8_OUTLIERS, INT8_OUTLIER_LAYERS) if int8 and INT8_OUTLIERS else {}

        def linear(kind, i, weight, bias):
            if not int8:
                return _Linear(weight, bias)
            return _Int8Linear(weight, bias, outliers.get((kind, i)), inplace=kind == "out")

        h = self.hidden
        self.layers = []
        last = len(bert.encoder.layer) - 1
        for i, layer in enumerate(bert.encoder.layer):
            att = layer.attention.self
            # Built per scorer, so a model trained in between is read afresh (RelevanceModel
            # keeps an int8 scorer only while the parameters are unchanged).
            w_qkv = torch.cat([att.query.weight, att.key.weight, att.value.weight]).detach()
            b_qkv = torch.cat([att.query.bias, att.key.bias, att.value.bias]).detach()
            if i < last or self.encoder_only:
                qkv = (linear("qkv", i, w_qkv, b_qkv),)
            else:  # [CLS]'s query alone, every token's keys and values
                qkv = (linear("qkv", i, w_qkv[:h], b_qkv[:h]), linear("qkv", i, w_qkv[h:], b_qkv[h:]))
            out = layer.output
            self.layers.append((qkv, getattr(att, "scaling", att.attention_head_size ** -0.5),
                                linear("att", i, layer.attention.output.dense.weight,
                                       layer.attention.output.dense.bias),
                                layer.attention.output.LayerNorm,
                                linear("inter", i, layer.intermediate.dense.weight, layer.intermediate.dense.bias),
                                layer.intermediate.intermediate_act_fn,
                                linear("out", i, out.dense.weight, out.dense.bias), out.LayerNorm))

    @classmethod
    def for_model(cls, net, dropout: bool = False, int8: bool = False, dropout_layers: int | None = None):
        """A scorer for `net`, or None where the HF forward must be used."""
        try:
            from transformers import BertForSequenceClassification
        except ImportError:  # pragma: no cover - transformers is a core dependency
            return None
        if type(net) is not BertForSequenceClassification or net.bert.pooler is None or not _plain_bert(net):
            return None
        return cls(net, dropout, int8, dropout_layers)

    @classmethod
    def for_encoder(cls, net, int8: bool = False):
        """A last-hidden-state scorer for a bare `BertModel` (mean-pooled embeddings), or None."""
        try:
            from transformers import BertModel
        except ImportError:  # pragma: no cover - transformers is a core dependency
            return None
        if type(net) is not BertModel or not _plain_bert(net):
            return None
        return cls(net, int8=int8)

    def __call__(self, input_ids, token_type_ids, lengths, passes: int | None = None):
        """`lengths` (a CPU int tensor) gives each row's real tokens; rows are right-padded.

        With `passes` (a dropout scorer), that many Monte Carlo samples stacked as (passes, b, 4):
        the layers below the sampled ones (`dropout_layers`) run once and every pass starts from
        their output, so a pass costs only the sampled layers and the head.
        """
        import torch
        import torch.nn.functional as F

        b, s = input_ids.shape
        h = self.hidden
        emb = self.emb
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Same order of additions as BertEmbeddings, for the same rounding.
        x = emb.word_embeddings(input_ids) + emb.token_type_embeddings(token_type_ids)
        x = x + emb.position_embeddings.weight[:s]
        x = F.layer_norm(x, (h,), emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps)
        mask = None
        if int(lengths.min()) < s:
            mask = (torch.arange(s) < lengths[:, None]).to(input_ids.device)[:, None, None, :]
        for i in range(self.sampled_from):
            x = self._layer(i, x, mask, sample=False)
        if passes is None:
            return self._sampled(x, mask)
        return torch.stack([self._sampled(x, mask) for _ in range(passes)])

    def _sampled(self, x, mask):
        """The sampled layers (dropout active; none for a plain scorer) and the head."""
        if self.sampled_from == 0:
            x = self._drop(x, self.p_hidden)   # BERT's dropout after the embeddings
        for i in range(self.sampled_from, len(self.layers)):
            x = self._layer(i, x, mask, sample=True)
        if self.encoder_only:
            return x
        pooled = self.net.bert.pooler(x)
        return self.net.classifier(self._drop(pooled, self.p_cls))

    def _layer(self, i: int, x, mask, sample: bool):
        import torch.nn.functional as F

        qkv, scale, att_dense, att_norm, inter_dense, act, out_dense, out_norm = self.layers[i]
        b, s, h = x.shape
        nh = self.heads
        p_hidden, p_attn = (self.p_hidden, self.p_attn) if sample else (0.0, 0.0)
        if len(qkv) == 1:
            q, k, v = qkv[0](x).view(b, s, 3, nh, -1).permute(2, 0, 3, 1, 4)
            resid = x
        else:  # only [CLS] is read after this layer: its query against every key
            k, v = qkv[1](x).view(b, s, 2, nh, -1).permute(2, 0, 3, 1, 4)
            resid = x[:, :1]
            q = qkv[0](resid).view(b, 1, nh, -1).transpose(1, 2)
        if s <= SHORT_ATTENTION:
            ctx = _short_attention(q, k, v, mask, p_attn, scale)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_attn, scale=scale)
        ctx = ctx.transpose(1, 2).reshape(b, -1, h)
        x = att_norm(self._drop(att_dense(ctx), p_hidden) + resid)
        return out_norm(self._drop(out_dense(act(inter_dense(x))), p_hidden) + x)

    @staticmethod
    def _drop(x, p: float):
        import torch.nn.functional as F

        return F.dropout(x, p, training=True) if p > 0 else x
