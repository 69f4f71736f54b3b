"""The protocol of a run, as a flat record: every setting that decides whether
one of its numbers measures what a number of the paper measures
(docs/deviations.md, Loh et al. §4 and App., implementation details).

A key is the path of a resolved config key (``pretrain.epochs``), so nothing is
typed twice; three kinds of keys have no single config path:

- ``pool_size.<mode>``: how many members of a mode a pool of the ensembles axis
  holds (the paper's ImageNet pools: 6 Eq, 4 Inv);
- ``dataset.class_list``: ``all`` where the dataset keeps its classes, else the
  sha256 of the class list the data manifest records (or of the configured
  list), so two ImageNet-100 runs with different classes never match;
- ``transfer[<dataset>].<path>``: a key of the transfer entry of that dataset
  (by dataset name, since the entry's key is the user's);

and ``FACTS`` are what the code does where no config key chooses (the
precision of GPU training, the order of the colour jitter, ...), so that the
paper's protocol can name them and docs/deviations.md explain them.

The same keys, read from a member's settings (which hold the config sections
under the same names), give the member's own record. Nothing here imports
torch; planning imports it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from multisym.members import MODES, member_table

# Read straight from the resolved config (and, where the section is there,
# from a member's settings).
CONFIG_KEYS = (
    "dataset.name", "dataset.image_size", "dataset.splits.val", "backbone.arch",
    "pretrain.epochs", "pretrain.batch_size", "pretrain.temperature", "pretrain.optimizer.name",
    "pretrain.optimizer.lr", "pretrain.optimizer.weight_decay", "pretrain.optimizer.warmup_epochs",
    "views.size", "views.crop_scale", "small_crop.size", "small_crop.crop_scale",
    "symmetries.rotation.lambda", "symmetries.rotation.p", "symmetries.halfswap.lambda", "symmetries.halfswap.p",
    "symmetries.invert.lambda", "symmetries.invert.p", "members.axes",
    "supervised.epochs", "supervised.batch_size", "supervised.optimizer.lr",
    "finetune.epochs", "finetune.batch_size", "finetune.optimizer.lr",
    "adapt.mode", "adapt.selection_split", "adapt.finetune.epochs", "adapt.finetune.batch_size",
    "adapt.finetune.lr", "adapt.finetune.train_augment",
    "ensembles.greedy.selection_split", "ensembles.greedy.start", "ensembles.random.draws",
    "ensembles.diversity_size", "ensembles.axes_size", "transfer.ensemble_size",
)


def _image_size(section: dict) -> Any:
    return section.get("dataset", {}).get("image_size")


# Keys of the view and crop geometry that a config may leave out (they have no
# schema default, so that configs without them keep their members' hashes),
# with what the code does then: views cut from the centre square of
# dataset.image_size by bilinear roi_align, and fine-tuning and evaluation on
# that square (docs/datasets.md#views-from-the-original-image).
WHEN_LEFT_OUT: dict[str, Callable[[dict], Any]] = {
    "dataset.views_from": lambda section: "square",
    "dataset.eval_resize": _image_size,
    "views.interpolation": lambda section: "bilinear",
    "small_crop.interpolation": lambda section: "bilinear",
    "adapt.finetune.crop_size": _image_size,
}

# What the code does where no config key chooses.
FACTS = {
    "precision": "bf16",  # GPU training: bf16 autocast (fp16 only on GPUs without bf16)
    "pretrain.online_head": False,  # no label-trained monitoring classifier during pretraining
    "views.jitter_order": "fixed",  # brightness, contrast, saturation, hue in this order
    "symmetries.invert.space": "pixel",  # x -> 1 - x on [0, 1] images, before normalisation
    "adapt.finetune.decay_1d": False,  # fine-tuning decays no bias or norm parameter
    "probe.method": "lbfgs",  # logistic regression on cached features, L2 chosen on val
    "diversity.kl": "both directions",  # mean of KL(p_j || p_i) over ordered pairs
    "diversity.spread": "std",  # unbiased std across members, averaged over classes
}

# A transfer entry's keys, relative to the entry; finetune.* only where it is fine-tuned.
TRANSFER_KEYS = ("mode", "dataset.splits.test", "dataset.image_size", "finetune.epochs", "finetune.batch_size",
                 "finetune.lr", "finetune.train_augment")
TRANSFER_WHEN_LEFT_OUT = {"dataset.views_from": lambda section: "square", "dataset.eval_resize": _image_size}
TRANSFER_FINETUNE_WHEN_LEFT_OUT = {"finetune.crop_size": _image_size}

ABSENT = object()
MISSING_VALUE = "(not recorded)"  # a key of the paper's protocol this run's record lacks


def value_at(section: dict, path: str) -> Any:
    """The value at a dotted key path, or ABSENT."""
    value: Any = section
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    return value


def _read(section: dict, keys, until_configured: dict) -> dict[str, Any]:
    out = {}
    for key in (*keys, *until_configured):
        value = value_at(section, key)
        if value is ABSENT and key in until_configured:
            value = until_configured[key](section)
        if value is not ABSENT:
            out[key] = value
    return out


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of a value, as ``sha256:<first 16 hex digits>``."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def class_list(dataset: dict, classes: list[str] | None = None) -> str:
    """``all``, or the digest of the (sorted) class list: the manifest's
    ``classes`` where given, else the configured list; a configured sample
    not yet drawn says so."""
    if classes is not None:
        return digest(sorted(classes))
    configured = dataset.get("classes")
    if configured is None:
        return "all"
    if isinstance(configured, dict):
        return f"sample of {configured['sample']} (seed {configured['seed']}), not drawn yet"
    return digest(sorted(configured))


def pool_sizes(config: dict) -> dict[str, int]:
    """Members per mode on the ensembles axis (Base and Sup have no axis)."""
    axis = config["ensembles"]["axis"]
    members = member_table(config)
    sizes = {f"pool_size.{mode}": sum(m.mode == mode and m.axis in (axis, None) for m in members) for mode in MODES}
    sizes["pool_size.ssl_ft"] = len(config["finetune"]["seeds"])
    return sizes


def transfer_record(entry: dict) -> dict[str, Any]:
    """``transfer[<dataset>].<key>`` of one transfer entry (its fine-tuning
    crops fall back to the transfer dataset's own image size)."""
    finetuned = entry["mode"] == "finetune"
    keys = ["mode", "dataset.image_size"] if entry["mode"] == "evaluate" else [
        k for k in TRANSFER_KEYS if finetuned or not k.startswith("finetune.")]
    values = _read(entry, keys, {**TRANSFER_WHEN_LEFT_OUT, **(TRANSFER_FINETUNE_WHEN_LEFT_OUT if finetuned else {})})
    return {f"transfer[{entry['dataset']['name']}].{key}": value for key, value in values.items()}


def record(config: dict, classes: list[str] | None = None) -> dict[str, Any]:
    """The run's protocol: every key above, from a resolved config (and the
    pretraining dataset's class list, when its manifest holds one)."""
    out = _read(config, CONFIG_KEYS, WHEN_LEFT_OUT)
    out["dataset.class_list"] = class_list(config["dataset"], classes)
    out.update(pool_sizes(config))
    out.update(FACTS)
    for entry in config["transfer"]["datasets"]:
        out.update(transfer_record(entry))
    return dict(sorted(out.items()))


def member_record(settings: dict, adapt: dict | None = None) -> dict[str, Any]:
    """One member's protocol: the keys its settings hold (its mode, seed, axis
    and loss weight, its dataset, backbone and training recipe), the facts of
    its training, and for an SSL member how it is adapted (``adapt``: the
    config's adapt section)."""
    out = {key: settings[key] for key in ("mode", "seed", "axis", "lambda", "p") if key in settings}
    out.update(_read(settings, CONFIG_KEYS, {k: f for k, f in WHEN_LEFT_OUT.items()
                                              if k.split(".")[0] in settings}))
    if "dataset" in settings:
        out["dataset.class_list"] = class_list(settings["dataset"])
    if "imported" in settings:
        out["imported.sha256"] = settings["imported"]["sha256"]
    out["precision"] = FACTS["precision"]
    if "pretrain" in settings:
        out.update({k: FACTS[k] for k in ("pretrain.online_head", "views.jitter_order")})
        if settings.get("axis") == "invert":
            out["symmetries.invert.space"] = FACTS["symmetries.invert.space"]
    if "pretrain" in settings and adapt is not None:
        section = {"adapt": adapt, "dataset": settings["dataset"]}
        prefix = "adapt." if adapt["mode"] == "finetune" else ("adapt.mode", "adapt.selection_split")
        out.update(_read(section, [k for k in CONFIG_KEYS if k.startswith(prefix)],
                         {k: f for k, f in WHEN_LEFT_OUT.items() if k.startswith(prefix)}))
        if adapt["mode"] == "finetune":
            out["adapt.finetune.decay_1d"] = FACTS["adapt.finetune.decay_1d"]
        else:
            out["probe.method"] = FACTS["probe.method"]
    return dict(sorted(out.items()))


def finetuned_record(member) -> dict[str, Any]:
    """An SSL-FT member's protocol: its Base member's, then its own fine-tuning recipe."""
    out = member_record(member.base.settings)
    out.update(_read({"finetune": member.settings}, [k for k in CONFIG_KEYS if k.startswith("finetune.")], {}))
    out.update(mode=member.mode, seed=member.seed, base=member.base.id)
    return dict(sorted(out.items()))
