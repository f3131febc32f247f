"""The test zoo: one entry per registered backbone.

Every class in ``mmvisbackbones.BACKBONES`` must provide an ``arch='test'``
(tiny) entry in its arch table and appear here; the zoo-wide tests
(shapes, strides, odd sizes, frozen stages, norm_eval, with_cp, a training
step, each consumer) then cover it.  ``bn`` gives kwargs for a variant with
BatchNorm layers (so that ``norm_eval`` has something to act on), or None.
"""
ZOO = {
    'VMamba': dict(kwargs=dict(arch='test'), bn=dict(norm_layer='bn')),
    'Vim': dict(kwargs=dict(arch='test'), bn=dict(sfp_norm='bn')),
    'VisionRWKV': dict(kwargs=dict(arch='test'), bn=dict(sfp_norm='bn')),
    # BatchNorm in the spatial prior module and the output norms (SyncBN, the
    # default, would need a process group in the distributed tests)
    'VisionRWKVAdapter': dict(kwargs=dict(arch='test', norm='bn'), bn=dict()),
    'PlainMamba': dict(kwargs=dict(arch='test'), bn=dict()),  # BatchNorm in stem / dwconv
    'MLLA': dict(kwargs=dict(arch='test'), bn=dict()),  # BatchNorm in stem/merging
    'Swin': dict(kwargs=dict(arch='test'), bn=None),
    'PVTv2': dict(kwargs=dict(arch='test'), bn=None),
    'BiFormer': dict(kwargs=dict(arch='test'), bn=dict()),  # BatchNorm in stem/downsample
}
