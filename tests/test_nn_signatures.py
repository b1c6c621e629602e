"""The `nn` layers' constructors have Equinox 0.13.8's signatures: parameter
names, kinds, order and defaults, so that calls written for Equinox, with
positional or keyword arguments, bind the same here.

pytreemod's additions are keyword-only parameters after all of Equinox's
(`axes=`, logical axis names for `pytreemod.sharding`), which no Equinox call
can bind by position."""

import inspect

import jax
import pytest

import pytreemod

P, K = "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"
VARARGS, VARKW = "VAR_POSITIONAL", "VAR_KEYWORD"
REQUIRED = inspect.Parameter.empty
FACTORY = "<factory>"  # a dataclass `default_factory` (the generated `__init__`)
IDENTITY = "<identity>"  # any function that returns its argument

# Equinox 0.13.8's constructor parameters, as (name, kind, default).
EXPECTED = {
    "AdaptiveAvgPool1d": [("target_shape", P, REQUIRED)],
    "AdaptiveAvgPool2d": [("target_shape", P, REQUIRED)],
    "AdaptiveAvgPool3d": [("target_shape", P, REQUIRED)],
    "AdaptiveMaxPool1d": [("target_shape", P, REQUIRED)],
    "AdaptiveMaxPool2d": [("target_shape", P, REQUIRED)],
    "AdaptiveMaxPool3d": [("target_shape", P, REQUIRED)],
    "AdaptivePool": [
        ("target_shape", P, REQUIRED),
        ("num_spatial_dims", P, REQUIRED),
        ("operation", P, REQUIRED),
    ],
    "AvgPool1d": [
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("use_ceil", P, False),
    ],
    "AvgPool2d": [
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("use_ceil", P, False),
    ],
    "AvgPool3d": [
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("use_ceil", P, False),
    ],
    "BatchNorm": [
        ("input_size", P, REQUIRED),
        ("axis_name", P, REQUIRED),
        ("eps", P, 1e-05),
        ("channelwise_affine", P, True),
        ("momentum", P, 0.99),
        ("inference", P, False),
        ("dtype", P, None),
        ("mode", P, "legacy"),
    ],
    "Conv": [
        ("num_spatial_dims", P, REQUIRED),
        ("in_channels", P, REQUIRED),
        ("out_channels", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("dilation", P, 1),
        ("groups", P, 1),
        ("use_bias", P, True),
        ("padding_mode", P, "ZEROS"),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "Conv1d": [
        ("in_channels", P, REQUIRED),
        ("out_channels", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("dilation", P, 1),
        ("groups", P, 1),
        ("use_bias", P, True),
        ("padding_mode", P, "ZEROS"),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "Conv2d": [
        ("in_channels", P, REQUIRED),
        ("out_channels", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, (1, 1)),
        ("padding", P, (0, 0)),
        ("dilation", P, (1, 1)),
        ("groups", P, 1),
        ("use_bias", P, True),
        ("padding_mode", P, "ZEROS"),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "Conv3d": [
        ("in_channels", P, REQUIRED),
        ("out_channels", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, (1, 1, 1)),
        ("padding", P, (0, 0, 0)),
        ("dilation", P, (1, 1, 1)),
        ("groups", P, 1),
        ("use_bias", P, True),
        ("padding_mode", P, "ZEROS"),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "ConvTranspose": [
        ("num_spatial_dims", P, REQUIRED),
        ("in_channels", P, REQUIRED),
        ("out_channels", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("output_padding", P, 0),
        ("dilation", P, 1),
        ("groups", P, 1),
        ("use_bias", P, True),
        ("padding_mode", P, "ZEROS"),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "ConvTranspose1d": [
        ("in_channels", P, REQUIRED),
        ("out_channels", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("output_padding", P, 0),
        ("padding", P, 0),
        ("dilation", P, 1),
        ("groups", P, 1),
        ("use_bias", P, True),
        ("padding_mode", P, "ZEROS"),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "ConvTranspose2d": [
        ("in_channels", P, REQUIRED),
        ("out_channels", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, (1, 1)),
        ("output_padding", P, (0, 0)),
        ("padding", P, (0, 0)),
        ("dilation", P, (1, 1)),
        ("groups", P, 1),
        ("use_bias", P, True),
        ("padding_mode", P, "ZEROS"),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "ConvTranspose3d": [
        ("in_channels", P, REQUIRED),
        ("out_channels", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, (1, 1, 1)),
        ("output_padding", P, (0, 0, 0)),
        ("padding", P, (0, 0, 0)),
        ("dilation", P, (1, 1, 1)),
        ("groups", P, 1),
        ("use_bias", P, True),
        ("padding_mode", P, "ZEROS"),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "Dropout": [("p", P, 0.5), ("inference", P, False), ("deterministic", K, None)],
    "Embedding": [
        ("num_embeddings", P, None),
        ("embedding_size", P, None),
        ("weight", P, None),
        ("dtype", P, None),
        ("key", K, None),
    ],
    "GRUCell": [
        ("input_size", P, REQUIRED),
        ("hidden_size", P, REQUIRED),
        ("use_bias", P, True),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "GroupNorm": [
        ("groups", P, REQUIRED),
        ("channels", P, None),
        ("eps", P, 1e-05),
        ("channelwise_affine", P, True),
        ("dtype", P, None),
    ],
    "Identity": [("args", VARARGS, REQUIRED), ("kwargs", VARKW, REQUIRED)],
    "LSTMCell": [
        ("input_size", P, REQUIRED),
        ("hidden_size", P, REQUIRED),
        ("use_bias", P, True),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "Lambda": [("fn", P, REQUIRED)],
    "LayerNorm": [
        ("shape", P, REQUIRED),
        ("eps", P, 1e-05),
        ("use_weight", P, True),
        ("use_bias", P, True),
        ("dtype", P, None),
        ("elementwise_affine", K, None),
    ],
    "Linear": [
        ("in_features", P, REQUIRED),
        ("out_features", P, REQUIRED),
        ("use_bias", P, True),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "MLP": [
        ("in_size", P, REQUIRED),
        ("out_size", P, REQUIRED),
        ("width_size", P, REQUIRED),
        ("depth", P, REQUIRED),
        ("activation", P, jax.nn.relu),
        ("final_activation", P, IDENTITY),
        ("use_bias", P, True),
        ("use_final_bias", P, True),
        ("dtype", P, None),
        ("scan", K, False),
        ("key", K, REQUIRED),
    ],
    "MaxPool1d": [
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("use_ceil", P, False),
    ],
    "MaxPool2d": [
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("use_ceil", P, False),
    ],
    "MaxPool3d": [
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("use_ceil", P, False),
    ],
    "MultiheadAttention": [
        ("num_heads", P, REQUIRED),
        ("query_size", P, REQUIRED),
        ("key_size", P, None),
        ("value_size", P, None),
        ("output_size", P, None),
        ("qk_size", P, None),
        ("vo_size", P, None),
        ("use_query_bias", P, False),
        ("use_key_bias", P, False),
        ("use_value_bias", P, False),
        ("use_output_bias", P, False),
        ("dropout_p", P, 0.0),
        ("inference", P, False),
        ("dtype", P, None),
        ("key", K, REQUIRED),
    ],
    "PReLU": [("init_alpha", P, 0.25)],
    "Pool": [
        ("init", P, REQUIRED),
        ("operation", P, REQUIRED),
        ("num_spatial_dims", P, REQUIRED),
        ("kernel_size", P, REQUIRED),
        ("stride", P, 1),
        ("padding", P, 0),
        ("use_ceil", P, False),
    ],
    "RMSNorm": [
        ("shape", P, REQUIRED),
        ("eps", P, 1e-05),
        ("use_weight", P, True),
        ("use_bias", P, True),
        ("dtype", P, None),
    ],
    "RotaryPositionalEmbedding": [
        ("embedding_size", P, REQUIRED),
        ("theta", P, 10000.0),
        ("dtype", P, FACTORY),
    ],
    "Sequential": [("layers", P, REQUIRED)],
    "Shared": [("pytree", P, REQUIRED), ("where", P, REQUIRED), ("get", P, REQUIRED)],
    "SpectralNorm": [
        ("layer", P, REQUIRED),
        ("weight_name", P, REQUIRED),
        ("num_power_iterations", P, 1),
        ("eps", P, 1e-12),
        ("inference", P, False),
        ("key", K, REQUIRED),
    ],
    "State": [("model", P, REQUIRED)],
    "StateIndex": [("init", P, REQUIRED)],
    "StatefulLayer": [],
    "WeightNorm": [
        ("layer", P, REQUIRED),
        ("weight_name", P, "weight"),
        ("axis", P, 0),
    ],
}

# pytreemod's keyword-only additions, appended after Equinox's parameters.
AXES = [("axes", K, None)]
ADDED = {
    "Conv": AXES,
    "Conv1d": AXES,
    "Conv2d": AXES,
    "Conv3d": AXES,
    "ConvTranspose": AXES,
    "ConvTranspose1d": AXES,
    "ConvTranspose2d": AXES,
    "ConvTranspose3d": AXES,
    "Embedding": AXES,
    "GroupNorm": AXES,
    "LayerNorm": AXES,
    "Linear": AXES,
    "MLP": AXES,
    "MultiheadAttention": AXES,
    "RMSNorm": AXES,
}


def _default_matches(actual, expected):
    if expected is FACTORY:
        return repr(actual) == FACTORY
    if expected is IDENTITY:
        marker = object()
        return callable(actual) and actual(marker) is marker
    if callable(expected) and expected is not REQUIRED:
        return actual is expected
    # `type` too: `(1, 1)` is not `1`, and `1` is not `True`.
    return type(actual) is type(expected) and actual == expected


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_constructor_signature_is_equinoxs(name):
    init = getattr(pytreemod.nn, name).__init__
    parameters = list(inspect.signature(init).parameters.values())[1:]  # self
    expected = EXPECTED[name] + ADDED.get(name, [])
    assert [(p.name, p.kind.name) for p in parameters] == [
        (n, kind) for n, kind, _ in expected
    ]
    for parameter, (_, _, default) in zip(parameters, expected, strict=True):
        assert _default_matches(parameter.default, default), parameter


def test_every_equinox_layer_is_pinned():
    # A layer added to `pytreemod.nn` gets a row here (or is pytreemod's own).
    ours_only = {"Stacked"}
    layers = {
        name
        for name in dir(pytreemod.nn)
        if isinstance(getattr(pytreemod.nn, name), type)
    }
    assert layers - ours_only == set(EXPECTED)


@pytest.mark.parametrize("cls", [pytreemod.nn.Conv2d, pytreemod.nn.ConvTranspose2d])
def test_tuple_defaults_build_the_int_layer(cls):
    # The tuple defaults (Equinox's spelling) mean what `1` and `0` mean.
    key = jax.random.key(0)
    default = cls(2, 3, 3, key=key)
    explicit = cls(2, 3, 3, stride=1, padding=0, dilation=1, key=key)
    assert pytreemod.tree_equal(default, explicit)
    assert default.stride == (1, 1) and default.padding == ((0, 0), (0, 0))
