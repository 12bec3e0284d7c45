/* Lua bindings of the machrt core: shared declarations. */
#ifndef MACHRT_L_MACHRT_H
#define MACHRT_L_MACHRT_H

#include <lua.h>
#include <lauxlib.h>
#include "machrt/tensor.h"

#define MRT_TENSOR_MT "machrt.Tensor"

/* Module openers (also found by stock lua5.4 in build/lua/machrt.so). */
int luaopen_machrt(lua_State *L);
int luaopen_machrt_audio(lua_State *L);   /* l_audio.c */
int luaopen_machrt_kernels(lua_State *L); /* l_kernels.c: nn and optim kernels */
int luaopen_machrt_workers(lua_State *L); /* l_workers.c: worker threads, shared cache */
int luaopen_machrt_dist_c(lua_State *L);  /* l_dist.c: MPI collectives for machrt.dist */
int luaopen_machrt_sys(lua_State *L);     /* l_sys.c: files, folders, JSON, SHA-256 */
int luaopen_machrt_synth_c(lua_State *L); /* l_synth.c: the synthesizer, for machrt.synth */
int luaopen_machrt_plot_c(lua_State *L);  /* l_plot.c: the canvas, for machrt.plot */

/* Each adds its functions to the table on top of the stack. */
void mrt_lua_audio_io(lua_State *L);       /* l_audio_io.c: info, load, save, resample */
void mrt_lua_audio_spectral(lua_State *L); /* l_audio_spectral.c: MelSpectrogram, ... */
void mrt_lua_nn(lua_State *L);             /* l_nn.c */
void mrt_lua_optim(lua_State *L);          /* l_optim.c */
void mrt_lua_infer_plan(lua_State *L);     /* l_infer_plan.c: oneDNN inference plans */

/* Registers every C module in package.preload (used by the machrt host). */
void mrt_lua_preload(lua_State *L);

/* Tensor userdata. push_new returns an empty tensor owned by the new
 * userdata on top of the stack (create the userdata first, then fill it, so
 * an allocation failure cannot leak: liolib's pattern). */
mrt_tensor *mrt_lua_push_tensor(lua_State *L);
mrt_tensor *mrt_lua_check_tensor(lua_State *L, int idx);
mrt_tensor *mrt_lua_test_tensor(lua_State *L, int idx);
/* Raises the pending core error as a Lua error unless st == MRT_OK. */
void mrt_lua_check(lua_State *L, mrt_status st);
/* The same, the message led by "<op>: " unless it names op already (core
 * errors such as "alloc: shape too large" do not say whose call it was). */
void mrt_lua_check_op(lua_State *L, mrt_status st, const char *op);
/* Reads a shape from a Lua list at idx, or from integers idx..top. */
int mrt_lua_check_shape(lua_State *L, int idx, int64_t *shape, const char *what);
void mrt_lua_open_tensor(lua_State *L); /* installs the metatable */

#endif
