"""Every test marked ``gpu`` has a CPU twin: the same test function collected without the mark (a parametrisation:
``pytest.param("cuda", marks=pytest.mark.gpu)`` beside a seam's parameter), so no GPU assertion goes unrun until
the first GPU night. Checked by collecting the suite as pytest does, not by reading its source."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def twinless(items) -> list[str]:
    """Node ids of the collected items marked ``gpu`` whose function has no collected item without the mark."""
    unmarked = {(str(i.path), i.originalname) for i in items if i.get_closest_marker("gpu") is None}
    return sorted(i.nodeid for i in items
                  if i.get_closest_marker("gpu") is not None and (str(i.path), i.originalname) not in unmarked)


def test_no_gpu_test_lacks_a_cpu_twin(pytester):
    items, _ = pytester.inline_genitems(str(TESTS), "-p", "no:cacheprovider", "-q")
    gpu = [i.nodeid for i in items if i.get_closest_marker("gpu") is not None]
    assert len(gpu) >= 8  # the GPU tests exist and are collected ...
    assert twinless(items) == []  # ... and each has a twin that runs here


def test_the_check_finds_a_gpu_test_without_a_twin(pytester):
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(test_planted="""
        import pytest

        @pytest.mark.gpu
        def test_alone():
            pass

        @pytest.mark.parametrize("on", [pytest.param("cuda", marks=pytest.mark.gpu), "seam"])
        def test_twinned(on):
            pass

        pytestmark_free = None
    """)
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider")
    assert [i.name for i in items if i.get_closest_marker("gpu")] == ["test_alone", "test_twinned[cuda]"]
    assert [n.rpartition("::")[2] for n in twinless(items)] == ["test_alone"]
