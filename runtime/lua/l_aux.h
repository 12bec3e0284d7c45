/* Argument helpers shared by every binding, as lauxlib is for Lua itself.
 *
 * Option tables are read key by key and every key is checked against the
 * list the function knows: a misspelt key (`hop = 512`) would otherwise fall
 * back to a default without a word. `idx` may hold none or nil (no options:
 * every getter returns its default). Messages read
 *   "<op>: <key> must be <what>, got <value>"
 * so the caller's `op` names the function (and, where it helps, the file). */
#ifndef MACHRT_L_AUX_H
#define MACHRT_L_AUX_H

#include <lua.h>
#include <lauxlib.h>
#include "machrt/tensor.h"

/* Raises "<op>: unknown option '<k>' (valid keys: a, b, ...)" for the first
 * key of the table at idx that is not in the NULL-terminated `keys`. */
void mrt_aux_check_keys(lua_State *L, int idx, const char *op, const char *const keys[]);

/* Checks that arg idx is none, nil or a table ("<op>: expected a table of
 * options, got a <type>"); then the keys. */
void mrt_aux_check_options(lua_State *L, int idx, const char *op, const char *const keys[]);

/* Pushes field `key` of the table at idx (nil when idx holds no table) and
 * returns its type. */
int mrt_aux_get_option(lua_State *L, int idx, const char *key);

/* An integer in [lo, hi], or `def` when absent. */
lua_Integer mrt_aux_opt_integer(lua_State *L, int idx, const char *op, const char *key,
                                lua_Integer def, lua_Integer lo, lua_Integer hi);
/* A number (NaN refused), or `def` when absent. */
double mrt_aux_opt_number(lua_State *L, int idx, const char *op, const char *key, double def);
/* A number that must be present. */
double mrt_aux_check_number_field(lua_State *L, int idx, const char *op, const char *key);
/* A boolean (only true or false), or `def` when absent. */
int mrt_aux_opt_boolean(lua_State *L, int idx, const char *op, const char *key, int def);
/* A string, or `def` when absent; it stays referenced by the options table. */
const char *mrt_aux_opt_string(lua_State *L, int idx, const char *op, const char *key,
                               const char *def);
/* One of the NULL-terminated `names` (its index), or `def` when absent.
 * "<op>: unknown <key> '<v>' (expected <expected>)"; expected = NULL lists
 * the names. */
int mrt_aux_opt_choice(lua_State *L, int idx, const char *op, const char *key,
                       const char *const names[], int def, const char *expected);

/* An optional tensor argument: none, nil or false give NULL. */
mrt_tensor *mrt_aux_opt_tensor(lua_State *L, int idx);

#endif
