"""Time LXT's efficient AttnLRP on a BERT sequence classifier (reference baseline).

Runs in its OWN virtualenv (see benchmarks/lxt_requirements.txt): LXT 2.1 needs
transformers 4.x, while masklrp's environment has transformers 5.x.  This script
must not import masklrp; the benchmark calls it as a subprocess:

    .venv-lxt/bin/python benchmarks/lxt_runner.py --model-dir DIR --ids IDS.npy \
        --threads N --repeats R --target 1

DIR is a `save_pretrained` folder of a BertForSequenceClassification (written by
transformers 5.x is fine: config.json + model.safetensors load unchanged in 4.57).
IDS.npy holds int64 token ids of shape (B, T); the attention mask is all ones and
the token types are all zero.

One explanation = word-embedding lookup (a grad-requiring leaf) + forward on
`inputs_embeds` + `torch.autograd.grad` of `logits[:, target].sum()` + relevance
per token `(embeds * grad).sum(-1)`, all inside the clock.  Prints ONE JSON line
on stdout; everything else goes to stderr.
"""

import argparse
import contextlib
import json
import sys
import time
import types
import warnings


def _install_torchvision_stand_in(torch):
    """Put a minimal `torchvision.models.vision_transformer` into sys.modules.

    `lxt.efficient.models` imports `lxt.efficient.models.vit_torch` at import time,
    and that module does `from torchvision.models import vision_transformer` only to
    build its ViT patch map (it reads `vision_transformer.nn.GELU/LayerNorm/
    MultiheadAttention`).  PyPI's torchvision does not load beside the local CPU
    torch 2.13.0 ("operator torchvision::nms does not exist"), so instead of
    installing it we provide just `vision_transformer.nn = torch.nn`.  Only the
    ViT patch would use it; the BERT patch never touches it.

    Must run AFTER transformers is imported: transformers probes
    `importlib.util.find_spec("torchvision")` when it is imported, and a stand-in
    without a __spec__ would make that probe raise (and one with a spec would make
    transformers believe torchvision is available).
    """
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    tv_models = types.ModuleType("torchvision.models")
    tv_vit = types.ModuleType("torchvision.models.vision_transformer")
    tv_vit.nn = torch.nn
    tv.models = tv_models
    tv_models.vision_transformer = tv_vit
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.models"] = tv_models
    sys.modules["torchvision.models.vision_transformer"] = tv_vit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--ids", required=True, help=".npy file, int64 (B, T)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--target", type=int, default=1)
    ap.add_argument("--fill-seconds", type=float, default=1.0,
                    help="repeat at least this long in total (default 1 s)")
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="cap on the total timed time (default 30 s)")
    args = ap.parse_args(argv)

    # Anything libraries print while importing/loading must not pollute stdout.
    with contextlib.redirect_stdout(sys.stderr):
        import numpy as np
        import torch

        torch.set_num_threads(args.threads)

        import transformers
        from transformers.models.bert import modeling_bert

        _install_torchvision_stand_in(torch)
        with warnings.catch_warnings():
            # lxt.efficient imports zennit inside try/except ImportError and only
            # warns when it is missing; zennit is used by the ViT (zennit) patches
            # only, so it is deliberately not installed.
            warnings.filterwarnings("ignore", message=".*zennit.*")
            import lxt
            from lxt.efficient import monkey_patch

        # Documented LXT usage: patch the transformers module BEFORE building the
        # model.  For BERT this replaces the contents of modeling_bert with LXT's
        # copy (and patches nn.LayerNorm / nn.Dropout forwards globally).
        monkey_patch(modeling_bert, verbose=False)

        model, info = modeling_bert.BertForSequenceClassification.from_pretrained(
            args.model_dir, dtype=torch.float32, output_loading_info=True)
        bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if bad:
            raise SystemExit(f"lxt_runner: weights did not load cleanly: {bad}")
        if type(model).__module__ != "lxt.efficient.models.bert":
            raise SystemExit(f"lxt_runner: model class is not LXT-patched ({type(model).__module__})")
        model.eval()
        model.requires_grad_(False)
        attn_impl = getattr(model.config, "_attn_implementation", None)

        ids_np = np.load(args.ids)
        if ids_np.ndim != 2:
            raise SystemExit(f"lxt_runner: ids must be (B, T), got {ids_np.shape}")
        ids = torch.from_numpy(np.ascontiguousarray(ids_np, dtype=np.int64))
        attention_mask = torch.ones_like(ids)
        token_type_ids = torch.zeros_like(ids)
        target = args.target
        word_embeddings = model.bert.embeddings.word_embeddings

        def explain():
            embeds = word_embeddings(ids).requires_grad_(True)
            logits = model(inputs_embeds=embeds, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).logits
            (grad,) = torch.autograd.grad(logits[:, target].sum(), embeds)
            relevance = (embeds * grad).sum(-1)
            return logits.detach(), relevance.detach()

        explain()  # warm-up

        # Minimum over max(R, as many calls as fill ~fill_seconds) calls, at least
        # 2 and at most 100, stopping early once ~max_seconds have been spent.
        best = float("inf")
        reps = 0
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            logits, relevance = explain()
            t1 = time.perf_counter()
            best = min(best, t1 - t0)
            reps += 1
            spent = t1 - t_start
            if reps >= 100 or (reps >= 2 and spent >= args.max_seconds):
                break
            if reps >= max(args.repeats, 2) and spent >= args.fill_seconds:
                break

    out = {
        "seconds": best,
        "repeats": reps,
        "logits": logits.double().tolist(),
        "relevance": relevance.double().tolist(),
        "lxt": getattr(lxt, "__version__", None) or _dist_version("lxt"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": attn_impl,
        "threads": torch.get_num_threads(),
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    main()
