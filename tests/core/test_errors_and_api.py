import inspect

import pytest

import dsrt
from dsrt import errors


def test_every_exported_name_exists():
    for name in dsrt.__all__:
        assert hasattr(dsrt, name), name


def test_error_tree_is_rooted_and_drawn():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]
    for cls in classes:
        assert issubclass(cls, errors.DsrtError), cls
        assert cls.__name__ in errors.__doc__ or cls is errors.DsrtOutOfMemoryError, f"{cls.__name__} not drawn"


def test_out_of_memory_message_carries_sizes():
    err = errors.OutOfMemoryError(device="cpu:0", requested=3 << 20, capacity=1 << 20, largest_free=512,
                                  stats={"reserved_bytes": 1 << 20}, tried=["free cached blocks", "spill"])
    text = str(err)
    assert "cpu:0" in text and str(3 << 20) in text and str(1 << 20) in text and "512 bytes" in text
    assert "tried: free cached blocks, spill" in text
    assert isinstance(err, MemoryError) and err.requested == 3 << 20


def test_topology_error_has_location():
    err = errors.TopologyError("bad link", file="lab.yaml", line=14, column=9)
    assert str(err) == "lab.yaml:14:9: bad link"


@pytest.mark.parametrize(("cls", "builtin"), [(errors.ShapeError, ValueError),
                                              (errors.BackendNotFoundError, LookupError),
                                              (errors.OutOfMemoryError, MemoryError)])
def test_builtin_bases_still_catch(cls, builtin):
    assert issubclass(cls, builtin)
