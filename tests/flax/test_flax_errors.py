"""Bad input to the Flax backend: a documented error, never a silent change."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import unirnn

SPEC = unirnn.gru(3, 4)


@pytest.mark.parametrize("option", ["param_dtype", "dtype"])
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.complex64, jnp.bool_])
@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_dtype_that_is_not_floating_point(option, dtype, api):
    """param_dtype=int32 with given weights used to zero them without a word."""
    with pytest.raises(unirnn.SpecError, match=f"{option}: expected a floating-point dtype"):
        unirnn.build(SPEC, "flax", unirnn.init_weights(SPEC), api=api, **{option: dtype})


@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.bool_])
def test_input_of_no_real_dtype(dtype):
    import jax

    module = unirnn.build(SPEC, "flax", unirnn.init_weights(SPEC))
    variables = module.init(jax.random.PRNGKey(0), jnp.ones((2, 5, 3)))
    with pytest.raises(unirnn.InputError, match="expected real numbers"):
        module.apply(variables, jnp.ones((2, 5, 3), dtype))


def test_wrong_cell_names_what_the_tree_is():
    params = unirnn.to_flax(SPEC, unirnn.init_weights(SPEC), cell="GRUCell")
    with pytest.raises(unirnn.WeightsError, match=r"LSTMCell: expected params .* pass "
                                                  r"cell='GRUCell'"):
        unirnn.from_flax(params, cell="LSTMCell")
    np.testing.assert_array_equal(
        unirnn.from_flax(params, cell="GRUCell")[1]["layer0.forward.w_x"],
        unirnn.init_weights(SPEC)["layer0.forward.w_x"])
