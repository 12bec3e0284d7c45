/* Optimizer kernels in `machrt.kernels` (see l_machrt.h):
 *
 *   adamw_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq|nil, cfg, step)
 *   sgd_step(param, grad, momentum_buf|nil, cfg, first)
 *   sum_squares(t) -> number
 *
 * `cfg` is read by field name so that machrt.optim can pass its parameter
 * group tables as they are (no table built per parameter per step):
 * AdamW reads lr, betas = {b1, b2} (or beta1, beta2), eps, weight_decay,
 * amsgrad; SGD reads lr, momentum, dampening, weight_decay, nesterov. Only lr
 * is required; the others default to PyTorch's values. */
#include "l_aux.h"
#include "l_machrt.h"
#include "machrt/optim.h"

static int k_adamw_step(lua_State *L)
{
    static const char op[] = "adamw_step";
    mrt_tensor *param = mrt_lua_check_tensor(L, 1), *grad = mrt_lua_check_tensor(L, 2);
    mrt_tensor *m = mrt_lua_check_tensor(L, 3), *v = mrt_lua_check_tensor(L, 4);
    mrt_tensor *vmax = mrt_aux_opt_tensor(L, 5);
    luaL_checktype(L, 6, LUA_TTABLE);
    lua_Integer step = luaL_checkinteger(L, 7);

    mrt_adamw_config cfg;
    cfg.lr = mrt_aux_check_number_field(L, 6, op, "lr");
    cfg.beta1 = 0.9;
    cfg.beta2 = 0.999;
    if (lua_getfield(L, 6, "betas") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            luaL_error(L, "%s: cfg.betas must be a table {beta1, beta2}, got %s", op,
                       luaL_typename(L, -1));
        lua_geti(L, -1, 1);
        lua_geti(L, -2, 2);
        if (!lua_isnumber(L, -2) || !lua_isnumber(L, -1))
            luaL_error(L, "%s: cfg.betas must hold two numbers", op);
        cfg.beta1 = lua_tonumber(L, -2);
        cfg.beta2 = lua_tonumber(L, -1);
        lua_pop(L, 2);
    } else {
        cfg.beta1 = mrt_aux_opt_number(L, 6, op, "beta1", 0.9);
        cfg.beta2 = mrt_aux_opt_number(L, 6, op, "beta2", 0.999);
    }
    lua_pop(L, 1);
    cfg.eps = mrt_aux_opt_number(L, 6, op, "eps", 1e-8);
    cfg.weight_decay = mrt_aux_opt_number(L, 6, op, "weight_decay", 1e-2);
    cfg.amsgrad = mrt_aux_opt_boolean(L, 6, op, "amsgrad", 0);
    if (cfg.amsgrad && !vmax)
        luaL_error(L, "%s: amsgrad needs the max_exp_avg_sq tensor (argument 5)", op);
    mrt_lua_check(L, mrt_adamw_step(param, grad, m, v, vmax, &cfg, (int64_t)step));
    return 0;
}

static int k_sgd_step(lua_State *L)
{
    static const char op[] = "sgd_step";
    mrt_tensor *param = mrt_lua_check_tensor(L, 1), *grad = mrt_lua_check_tensor(L, 2);
    mrt_tensor *buf = mrt_aux_opt_tensor(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    int first = lua_toboolean(L, 5);

    mrt_sgd_config cfg;
    cfg.lr = mrt_aux_check_number_field(L, 4, op, "lr");
    cfg.momentum = mrt_aux_opt_number(L, 4, op, "momentum", 0.0);
    cfg.dampening = mrt_aux_opt_number(L, 4, op, "dampening", 0.0);
    cfg.weight_decay = mrt_aux_opt_number(L, 4, op, "weight_decay", 0.0);
    cfg.nesterov = mrt_aux_opt_boolean(L, 4, op, "nesterov", 0);
    if (cfg.momentum != 0.0 && !buf)
        luaL_error(L, "%s: momentum %f needs a momentum buffer (argument 3)", op,
                   (lua_Number)cfg.momentum);
    mrt_lua_check(L, mrt_sgd_step(param, grad, buf, &cfg, first));
    return 0;
}

static int k_sum_squares(lua_State *L)
{
    double s;
    mrt_lua_check(L, mrt_sum_squares(mrt_lua_check_tensor(L, 1), &s));
    lua_pushnumber(L, s);
    return 1;
}

static const luaL_Reg optim_funcs[] = {
    {"adamw_step", k_adamw_step}, {"sgd_step", k_sgd_step}, {"sum_squares", k_sum_squares},
    {NULL, NULL}};

void mrt_lua_optim(lua_State *L) { luaL_setfuncs(L, optim_funcs, 0); }
