from .checkpoint import (CheckpointMismatchError, extract_state_dict, load_checkpoint_file,
                         load_pretrained, match_state_dict, rename_first_match, strip_prefixes)
from .complexity import count_flops, counting_macs
from .serialization import register_safe_globals, safe_globals

__all__ = [
    'CheckpointMismatchError', 'extract_state_dict', 'load_checkpoint_file', 'load_pretrained',
    'match_state_dict', 'rename_first_match', 'count_flops', 'counting_macs', 'strip_prefixes',
    'register_safe_globals', 'safe_globals'
]
