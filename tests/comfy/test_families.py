"""The family registry (nodes/families/): one declaration per family, and everything that names families
derived from it -- the blocks menu and tooltip, the unsupported-model error, README's table. Detection is by
the diffusion model's exact class; whether a family's blocks call the hook is told by a tiny probe call."""
import sys
from pathlib import Path

import pytest
import torch

import dit_models
from graph_helpers import registry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def families(comfy):
    return registry(comfy)


def comfy_version():
    import comfyui_version
    return comfyui_version.__version__


def test_readme_table_is_the_registry(families):
    readme = (REPO / "README.md").read_text()
    assert families.families_table() in readme, "README's family table differs from families_table(); paste it"


def test_blocks_menu_and_tooltip_come_from_the_registry(comfy, families):
    schema = comfy.Sampler.define_schema()
    blocks = next(i for i in schema.inputs if i.id == "blocks")
    assert tuple(blocks.options) == families.block_choices()
    assert blocks.tooltip == families.blocks_tooltip()
    for family in families.REGISTRY:
        assert set(family.presets) <= set(blocks.options), family.name
        assert family.name in blocks.tooltip
        assert family.models in families.supported_text()
        for preset in family.presets:   # every preset parses and names this family's kinds only
            from_core = sys.modules[families.__name__.rsplit(".", 2)[0] + ".attention.options"]
            assert not family.names_blocks_of_another_kind(from_core.parse_blocks(preset, "test"))


def test_every_family_is_one_declaration_with_a_way(families):
    names = [f.name for f in families.REGISTRY]
    assert len(names) == len(set(names))
    assert families.REGISTRY[-1] is families.FALLBACK and not families.FALLBACK.model_classes
    for family in families.REGISTRY:
        assert family.presets and family.block_lists and family.default_text
        assert isinstance(family.way, families.Way)


def test_the_probe_tells_whether_blocks_call_the_hook(families):
    """0.30.0's DiT blocks call the pre-attention hook; 0.3.64's take transformer_options but never call it.
    A failed probe (None) is inconclusive and never refuses by itself."""
    for family in families.REGISTRY:
        if family.probe is None or not any(families.base.class_at(c) for c in family.model_classes):
            continue   # the SD U-Net fallback, or a model this ComfyUI does not have (Krea2 on 0.3.64)
        # (Cosmos Predict2's MiniTrainDIT is in 0.3.64 too: its probe must say False there.)
        expected = comfy_version() != "0.3.64"
        assert family.probe() is expected, (family.name, comfy_version())


@pytest.mark.parametrize("tiny,name", [("flux1", "Flux"), ("flux2", "Flux"), ("qwen", "Qwen-Image"),
                                       ("chroma", "Chroma"), ("chroma_radiance", "Chroma"),
                                       ("hunyuan_video", "HunyuanVideo"), ("hunyuan_video15", "HunyuanVideo"),
                                       ("zimage", "Z-Image"), ("krea2", "Krea2"),
                                       ("cosmos", "Cosmos Predict2"), ("anima", "Cosmos Predict2")])
def test_detected_by_model_class(comfy, families, tiny, name):
    try:
        model = dit_models.build(comfy, tiny)
    except (AssertionError, TypeError, AttributeError) as error:
        pytest.skip(f"ComfyUI {comfy_version()} cannot build the tiny {tiny} model ({error})")
    assert families.family_of(model.model).name == name


def test_an_undeclared_model_gets_the_supported_list(families):
    class SomeDiT(torch.nn.Module):
        pass

    class FakeModel:
        diffusion_model = SomeDiT()

    assert families.family_of(FakeModel()) is families.FALLBACK
    with pytest.raises(ValueError, match="Store Reference Attention: this model's diffusion model is a SomeDiT, "
                                         "which no model family of the pack covers.*Supported: SD1.x"):
        families.check_supported(FakeModel(), frozenset({"output"}), "Store Reference Attention")


def test_a_failed_probe_does_not_refuse(families):
    """An inconclusive probe counts as present (the end-of-run check still stops a run the hook never saw)."""
    family = families.Family(name="X", models="x", way=families.FALLBACK.way, block_lists={"a": "a"},
                             presets=("a",), default_blocks=lambda m: frozenset({"a"}), default_text="a",
                             probe=lambda: None)
    assert family.hook_present()
    absent = families.Family(name="Y", models="y", way=families.FALLBACK.way, block_lists={"a": "a"},
                             presets=("a",), default_blocks=lambda m: frozenset({"a"}), default_text="a",
                             probe=lambda: False)
    assert not absent.hook_present()


def test_the_marker_probe_wants_self_attention_right_after_the_marker(families):
    """The Cosmos probe's rule, on fake model calls: True only where every marked block's next attention call
    is its self-attention ([B, heads, L, D] keys as long as the queries, skip_reshape); False where the marker
    is never called, where another attention call comes first, or where the marker gets projected inputs;
    None (inconclusive) where the call fails."""
    probe = sys.modules[families.__name__ + ".way_pre_projection_override"].probe_marked_self_attention
    x, heads = torch.zeros(1, 4, 8), torch.zeros(1, 2, 4, 4)
    text = torch.zeros(1, 2, 2, 4)

    def model(*order, marker_input=x):
        def call(options):
            for step, block in order:
                if step == "mark":
                    for p in options["patches"]["attn1_patch"]:
                        p(marker_input, marker_input, marker_input, pe=None, extra_options={"block_index": block})
                else:
                    k = heads if step == "self" else text
                    options["optimized_attention_override"](lambda *a, **kw: None, heads, k, k, 2,
                                                            skip_reshape=True,
                                                            transformer_options={"block_index": block})
        return call

    assert probe(model(("mark", 0), ("self", 0), ("cross", 0), ("mark", 1), ("self", 1), ("cross", 1))) is True
    assert probe(model(("self", 0), ("cross", 0))) is False
    assert probe(model(("mark", 0), ("cross", 0), ("self", 0))) is False
    assert probe(model(("mark", 0), ("self", 1))) is False
    assert probe(model(("mark", 0), ("self", 0), marker_input=heads)) is False

    def failing(options):
        raise TypeError("a constructor this pack does not know")
    assert probe(failing) is None
