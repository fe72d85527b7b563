"""write_npz_atomic / read_npz: the file layer under save_model (and the compression package).

Faults are injected for real: an array object whose conversion raises, KeyboardInterrupt
raised by that object, os.replace / os.fsync failing, and the kernel refusing to grow the file
(RLIMIT_FSIZE). Each must leave the old file byte-identical and no temporary file behind.
"""
import io
import os
import signal
import threading
import zipfile

import numpy as np
import pytest
from npz_craft import npy_bytes, zip_bytes

from tinytorch.core import Linear, Sequential, Tanh, Tensor, load_model, manual_seed, read_npz, save_model
from tinytorch.core import serialization
from tinytorch.core.serialization import write_npz_atomic

ARRAYS = {
    "float32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
    "big_endian": np.arange(5, dtype=">i4"),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "bool": np.array([True, False, True]),
    "empty": np.zeros((0, 7), dtype=np.float32),
    "text": np.array("a JSON string, as __spec__ is"),
    "param:0.weight": np.ones((2, 2), np.float16),  # the compression package's key style
}


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_agrees_with_numpy(tmp_path, compress):
    path = tmp_path / "a.npz"
    size = write_npz_atomic(path, ARRAYS, compress=compress)
    assert size == path.stat().st_size
    got = read_npz(path)
    with np.load(path, allow_pickle=False) as oracle:  # numpy's own reader is the oracle
        assert sorted(oracle.files) == sorted(got) == sorted(ARRAYS)
        for key, value in ARRAYS.items():
            assert got[key].dtype == value.dtype == oracle[key].dtype and got[key].shape == value.shape
            np.testing.assert_array_equal(got[key], value)
            np.testing.assert_array_equal(got[key], oracle[key])
    info = zipfile.ZipFile(path).infolist()[0]
    assert info.compress_type == (zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)


def test_file_gets_an_ordinary_mode_and_no_temp_remains(tmp_path):
    path = tmp_path / "a.npz"
    write_npz_atomic(path, {"x": np.zeros(3)})
    write_npz_atomic(path, {"x": np.ones(3)})
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # like open(path, "w"), not mkstemp's 0600
    assert os.listdir(tmp_path) == ["a.npz"]
    np.testing.assert_array_equal(read_npz(path)["x"], np.ones(3))


@pytest.mark.parametrize("arrays", [[("x", np.zeros(2))], {"": np.zeros(2)}, {1: np.zeros(2)},
                                    {"ok": np.zeros(2), "obj": np.array([None, {}], dtype=object)}],
                         ids=["list", "empty-name", "int-name", "object-array"])
def test_bad_arrays_raise_value_error_and_leave_nothing(tmp_path, arrays):
    with pytest.raises(ValueError, match="arrays"):
        write_npz_atomic(tmp_path / "a.npz", arrays)
    assert os.listdir(tmp_path) == []


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file"):
        read_npz(tmp_path / "none.npz", what="weights file")
    with pytest.raises(ValueError, match=str(tmp_path)):
        read_npz(tmp_path)


# ------------------------------------------------------------------ fault injection
class FailingArray:
    """A real array-like whose conversion fails, as a lazily computed array might."""

    def __init__(self, error):
        self.error = error

    def __array__(self, dtype=None, copy=None):
        raise self.error


@pytest.fixture
def old_file(tmp_path):
    path = tmp_path / "model.npz"
    manual_seed(0)
    save_model(Sequential(Linear(4, 8), Tanh(), Linear(8, 2)), path)
    return path


def assert_untouched(path, before):
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind
    load_model(path)


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_failure_while_writing_an_array_keeps_the_old_file(old_file, error):
    before = old_file.read_bytes()
    arrays = {"a": np.ones((64, 64)), "b": np.zeros(10), "c": FailingArray(error), "d": np.ones(3)}
    with pytest.raises(type(error)):
        write_npz_atomic(old_file, arrays)  # "a" and "b" are already in the temporary file
    assert_untouched(old_file, before)


@pytest.mark.parametrize("where", ["fsync", "replace"])
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["oserror", "ctrl-c"])
def test_failure_at_fsync_or_rename_keeps_the_old_file(old_file, monkeypatch, where, error):
    before = old_file.read_bytes()

    def fail(*args):
        raise error

    monkeypatch.setattr(os, where, fail)
    with pytest.raises(type(error)):
        save_model(Sequential(Linear(4, 3)), old_file)
    monkeypatch.undo()
    assert_untouched(old_file, before)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_kernel_refusing_to_grow_the_file_keeps_the_old_file(old_file):
    resource = pytest.importorskip("resource")
    before = old_file.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, hard))
    try:
        with pytest.raises(OSError):
            write_npz_atomic(old_file, {"big": np.random.default_rng(0).standard_normal(100_000)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert_untouched(old_file, before)


def test_readers_racing_a_writer_see_only_complete_files(tmp_path):
    path = tmp_path / "model.npz"
    manual_seed(1)
    models = [Sequential(Linear(6, 16), Tanh(), Linear(16, 3)), Sequential(Linear(6, 5), Linear(5, 3))]
    x = Tensor(np.random.default_rng(0).standard_normal((4, 6)))
    expected = [m.eval()(x).data for m in models]
    save_model(models[0], path)
    done, errors = threading.Event(), []

    def writer():
        try:
            for i in range(300):
                save_model(models[i % 2], path)
        except BaseException as err:  # report in the main thread
            errors.append(err)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = seen_first = 0
    while not done.is_set() or reads < 300:
        out = load_model(path)(x).data  # any exception here fails the test
        matches = [np.array_equal(out, e) for e in expected]
        assert any(matches)
        seen_first += matches[0]
        reads += 1
    thread.join()
    assert errors == [] and reads >= 300 and os.listdir(tmp_path) == ["model.npz"]
    assert 0 < seen_first < reads  # the reads really interleaved with both versions


# ------------------------------------------------------------------ malformed archives
def write(tmp_path, data, name="bad.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("members, reason", [
    ([("x.npy", npy(np.zeros(2)), None), ("x.npy", npy(np.ones(2)), None)], "duplicate"),
    ([("x.txt", npy(np.zeros(2)), None)], "not a .npy"),
    ([("x.npy", npy_bytes((3,), data=bytes(16)), None)], "header declares"),
    ([("x.npy", npy_bytes((-3,), data=b""), None)], "negative"),
    ([("x.npy", npy_bytes((2,), descr="|V8", data=bytes(16)), None)], "not allowed"),
    ([("x.npy", npy_bytes((2,), descr="<M8[s]", data=bytes(16)), None)], "not allowed"),
    ([("x.npy", b"\x93NUMPY\x03\x00" + bytes(40), None)], "version"),
    ([("x.npy", b"not an npy file at all", None)], "magic"),
], ids=["duplicate", "not-npy", "size-mismatch", "negative-shape", "record-dtype", "datetime", "npy-v3", "no-magic"])
def test_malformed_members_raise_value_error(tmp_path, members, reason):
    with pytest.raises(ValueError, match=f"bad.npz.*{reason}"):
        read_npz(write(tmp_path, zip_bytes(members)))


def test_member_count_is_bounded(tmp_path, monkeypatch):
    path = write(tmp_path, zip_bytes([(f"{i}.npy", npy(np.zeros(1)), None) for i in range(4)]))
    assert len(read_npz(path)) == 4
    monkeypatch.setattr(serialization, "MAX_MEMBERS", 3)
    with pytest.raises(ValueError, match="4 members"):
        read_npz(path)


def test_unsupported_compression_and_encryption_are_refused(tmp_path):
    path = tmp_path / "bzip.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("x.npy", npy(np.zeros(3)))
    with pytest.raises(ValueError, match="bzip.npz.*compression method"):
        read_npz(path)
    data = bytearray(zip_bytes([("x.npy", npy(np.zeros(3)), None)]))
    central = data.rfind(b"PK\x01\x02")
    data[6] |= 1  # the "encrypted" flag bit, in the local header and the central directory
    data[central + 8] |= 1
    with pytest.raises(ValueError, match="encrypted"):
        read_npz(write(tmp_path, bytes(data)))


def test_stored_member_whose_sizes_disagree_is_refused(tmp_path):
    path = write(tmp_path, zip_bytes([("x.npy", npy(np.zeros(3)), 10**6)]))
    with pytest.raises(ValueError, match="stored member"):
        read_npz(path)


def test_data_not_matching_its_crc_is_refused(tmp_path):
    data = bytearray(zip_bytes([("x.npy", npy(np.arange(100, dtype=np.float32)), None)]))
    data[200] ^= 0x01  # inside the stored array data
    with pytest.raises(ValueError, match="CRC"):
        read_npz(write(tmp_path, bytes(data)))
