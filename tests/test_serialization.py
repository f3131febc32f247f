"""The weights-only allow-list admits the Runner's data types and nothing else."""
import io
import pickle
import subprocess
import sys

import pytest
import torch

import mmvisbackbones  # noqa: F401  (registers the allow-list)
from mmengine.logging import HistoryBuffer, MessageHub


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_message_hub_and_numpy_meta_load():
    import numpy as np
    hub = MessageHub.get_instance('test_serialization')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(0.5))
    obj = {'message_hub': hub.state_dict(), 'meta': {'seed': np.int64(3),
                                                     'arr': np.arange(3)}}
    out = roundtrip(obj)
    buf = out['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.mean() == pytest.approx(1.0)
    assert out['meta']['seed'] == 3 and out['meta']['arr'].tolist() == [0, 1, 2]


class _GetattrAttack:

    def __reduce__(self):
        return (getattr, (torch.Tensor, 'add'))


class _CodeAttack:

    def __reduce__(self):
        return (print, ('pwned', ))


@pytest.mark.parametrize('attack', [_GetattrAttack(), _CodeAttack()])
def test_anything_else_is_refused(attack):
    with pytest.raises(pickle.UnpicklingError):
        roundtrip({'x': attack})


def test_without_the_plugin_torch_refuses_history_buffers(tmp_path):
    hub = MessageHub.get_instance('test_serialization_2')
    hub.update_scalar('loss', 1.0)
    path = tmp_path / 'ckpt.pth'
    torch.save({'message_hub': hub.state_dict()}, path)
    code = ('import sys, torch, pickle\n'
            'try:\n    torch.load(sys.argv[1], weights_only=True)\n    print("LOADED")\n'
            'except pickle.UnpicklingError:\n    print("REFUSED")\n')
    r = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True, text=True)
    assert 'REFUSED' in r.stdout, r.stdout + r.stderr
