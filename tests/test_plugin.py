"""The entry point, as vLLM's own plugin loader finds it."""

import pytest

from vllm_selfspec import patches
from vllm_selfspec.plugin import UnsupportedVllmError, check_vllm_version, register


def test_vllm_discovers_the_entry_point_and_it_is_idempotent():
    from vllm.plugins import DEFAULT_PLUGINS_GROUP, load_plugins_by_group

    plugins = load_plugins_by_group(DEFAULT_PLUGINS_GROUP)
    assert plugins.get("selfspec") is register
    plugins["selfspec"]()
    plugins["selfspec"]()
    assert patches.apply_all() == 0  # every hook already in place, none doubled
    for hook in patches.hooks():
        raw = hook.owner.__dict__[hook.name]
        fn = raw.fget if isinstance(raw, property) else getattr(raw, "__func__", raw)
        assert hasattr(fn, patches._MARK), f"{hook.owner.__name__}.{hook.name} not hooked"
        assert not hasattr(getattr(fn, patches._MARK), patches._MARK), "hooked twice"


def test_other_vllm_versions_are_refused_with_the_fix():
    check_vllm_version("0.32.0")
    with pytest.raises(UnsupportedVllmError, match=r"0\.33\.1.*install vllm==0\.32\.0"):
        check_vllm_version("0.33.1")
