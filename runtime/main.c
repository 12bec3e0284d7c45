/* machrt: the Lua 5.4 host for the machrt runtime.
 *
 * Shaped after Lua's own lua.c (same `arg` table, same REPL rules for
 * expressions and continuation lines, same SIGINT handling) with what a
 * runtime host needs on top: its C modules preloaded, its Lua modules found
 * next to the executable or under the install prefix, and readline history
 * in ~/.machrt_history. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lua/l_machrt.h"
#include "machrt/dist.h"

#ifndef MACHRT_VERSION
#define MACHRT_VERSION "dev"
#endif
#ifndef MACHRT_PREFIX
#define MACHRT_PREFIX "/usr/local"
#endif

#define PROMPT1 "machrt> "
#define PROMPT2 "...> "
#define HISTORY_FILE ".machrt_history"
#define HISTORY_MAX 1000

static const char *progname = "machrt";

static void print_usage(FILE *f)
{
    fprintf(f,
            "usage: %s [options] [script [args]]\n"
            "Available options are:\n"
            "  -e stat   execute string 'stat'\n"
            "  -i        enter interactive mode after executing 'script'\n"
            "  -l mod    require library 'mod' into global 'mod'\n"
            "  -v, --version  show version information and exit\n"
            "  -h, --help     show this help and exit\n"
            "  --traceback    a Lua traceback with every error (also MACHRT_TRACEBACK=1;\n"
            "                 after the script too, taken out of its arguments)\n"
            "  --        stop handling options\n"
            "  -         execute stdin as a script and stop handling options\n"
            "With no script and no -e, machrt starts an interactive session.\n",
            progname);
}

/* Messages carry no prefix in the REPL, as in lua.c: the user is looking at
 * the line that failed. */
static void report_message(const char *pname, const char *msg)
{
    if (pname)
        fprintf(stderr, "%s: ", pname);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

static int report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL)
            msg = "(error object is not a string)";
        report_message(progname, msg);
        lua_pop(L, 1);
    }
    return status;
}

/* ---- what failed: the user's input, machrt itself, or Ctrl-C ---------- */

/* A user's mistake (a bad flag, a missing file, a bad value) is raised as
 * error(message, 0): a message that names the thing, with no position in
 * the code. Such errors print one line and exit 2; anything else (a
 * runtime error, error() with a position, a C module's error) is a bug or
 * a script's own failure and prints a traceback, exit 1. Ctrl-C exits 130. */
enum { FAIL_NONE, FAIL_USER, FAIL_INTERNAL, FAIL_INTERRUPT };
enum { EXIT_USER = 2, EXIT_INTERRUPT = 130 };

static int last_failure = FAIL_NONE;
static int always_traceback; /* --traceback or MACHRT_TRACEBACK=1 */
static volatile sig_atomic_t interrupted;

#define ERROR_KEY "machrt.host.error" /* the registry's copy of the builtin error */

/* "chunk:line:" anywhere in the first line: a position in Lua code, also
 * inside a message that passed one along ("worker job 3 failed: x.lua:9:"). */
static int has_position(const char *msg)
{
    for (const char *p = msg; *p != '\0' && *p != '\n'; p++) {
        if (*p != ':' || p == msg || isspace((unsigned char)p[-1]) || !isdigit((unsigned char)p[1]))
            continue;
        const char *q = p + 1;
        while (isdigit((unsigned char)*q))
            q++;
        if (*q == ':')
            return 1;
    }
    return 0;
}

/* In the message handler: level 1 is the function that raised the error. */
static int raised_by_error_builtin(lua_State *L)
{
    lua_Debug ar;
    if (!lua_getstack(L, 1, &ar) || !lua_getinfo(L, "f", &ar))
        return 0;
    lua_getfield(L, LUA_REGISTRYINDEX, ERROR_KEY);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

static int classify(lua_State *L, const char *msg)
{
    if (interrupted)
        return FAIL_INTERRUPT;
    if (lua_type(L, 1) == LUA_TSTRING && raised_by_error_builtin(L) && !has_position(msg))
        return FAIL_USER;
    return FAIL_INTERNAL;
}

static int exit_status(void)
{
    switch (last_failure) {
    case FAIL_USER: return EXIT_USER;
    case FAIL_INTERRUPT: return EXIT_INTERRUPT;
    default: return EXIT_FAILURE;
    }
}

/* ---- SIGINT: stop the running Lua code at its next hook --------------- */

static lua_State *global_L = NULL;

/* The error carries no position: where Ctrl-C landed says nothing. Scripts
 * that can continue (a training run) say how, from their to-be-closed
 * handlers, before the host prints this. */
static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    lua_pushliteral(L, "interrupted (Ctrl-C)");
    lua_error(L);
}

/* Only lua_sethook is safe here; the error is raised later from the hook.
 * Restoring the default first lets a second Ctrl-C kill a stuck C call. */
static void on_sigint(int sig)
{
    signal(sig, SIG_DFL);
    interrupted = 1;
    lua_sethook(global_L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* Adds a traceback, except to a user's error or an interruption (unless
 * always_traceback); error objects with __tostring are shown through it.
 * Runs again for an error raised while closing variables: the last wins. */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    last_failure = classify(L, msg);
    if (last_failure == FAIL_INTERNAL || always_traceback)
        luaL_traceback(L, L, msg, 1);
    else if (last_failure == FAIL_INTERRUPT)
        lua_pushliteral(L, "interrupted (Ctrl-C)"); /* not the frames it passed through */
    else
        lua_pushstring(L, msg);
    return 1;
}

static int docall(lua_State *L, int narg, int nres)
{
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    global_L = L;
    interrupted = 0; /* a REPL line after a Ctrl-C starts afresh */
    signal(SIGINT, on_sigint);
    int status = lua_pcall(L, narg, nres, base);
    signal(SIGINT, SIG_DFL);
    lua_remove(L, base);
    return status;
}

static int dochunk(lua_State *L, int status)
{
    if (status == LUA_OK)
        status = docall(L, 0, 0);
    return report(L, status);
}

static int dostring(lua_State *L, const char *s, const char *name)
{
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* `-l mod`: mod = require("mod") */
static int dolibrary(lua_State *L, const char *name)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    int status = docall(L, 1, 1);
    if (status == LUA_OK)
        lua_setglobal(L, name);
    return report(L, status);
}

/* ---- arg table and script --------------------------------------------- */

/* arg[0] is the script, arg[1..] its arguments, and the interpreter and its
 * options get the negative indices (lua.c's layout). With no script, arg[0]
 * is the interpreter. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script)
{
    lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int handle_script(lua_State *L, char **argv, int script)
{
    const char *fname = argv[script];
    if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
        fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        lua_getglobal(L, "arg");
        if (lua_type(L, -1) != LUA_TTABLE)
            luaL_error(L, "'arg' is not a table");
        int n = (int)luaL_len(L, -1);
        luaL_checkstack(L, n + 3, "too many arguments to script");
        for (int i = 1; i <= n; i++)
            lua_rawgeti(L, -i, i);
        lua_remove(L, -n - 1);
        status = docall(L, n, LUA_MULTRET);
    }
    return report(L, status);
}

/* ---- module search path ----------------------------------------------- */

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Modules live beside the executable in a build tree (./machrt next to
 * ./modules), under <bin>/../share in a relocated install, and under the
 * configured prefix otherwise; no LUA_PATH setup is needed for any. */
static void find_modules_dir(char *out, size_t len)
{
    char exe[PATH_MAX];
    if (realpath("/proc/self/exe", exe) != NULL) {
        char *slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(out, len, "%s/modules", exe);
            if (is_dir(out))
                return;
            snprintf(out, len, "%s/../share/machrt/modules", exe);
            if (is_dir(out))
                return;
        }
    }
    snprintf(out, len, "%s/share/machrt/modules", MACHRT_PREFIX);
}

static void setup_paths(lua_State *L)
{
    char dir[PATH_MAX + 32];
    find_modules_dir(dir, sizeof dir);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, old ? old : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
    mrt_lua_preload(L);
}

/* ---- REPL ------------------------------------------------------------- */

static int interactive; /* stdin is a terminal: readline, prompts, history */
static char history_path[PATH_MAX];

static void save_history(void)
{
    if (history_path[0] != '\0')
        write_history(history_path); /* failure (read-only HOME) is harmless */
}

static void init_history(void)
{
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0')
        return;
    if ((size_t)snprintf(history_path, sizeof history_path, "%s/%s", home, HISTORY_FILE) >=
        sizeof history_path) {
        history_path[0] = '\0';
        return;
    }
    using_history();
    stifle_history(HISTORY_MAX);
    read_history(history_path);
    /* os.exit() from the REPL still saves the session. */
    atexit(save_history);
}

static const char *get_prompt(lua_State *L, int first)
{
    const char *p = first ? PROMPT1 : PROMPT2;
    if (lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2") == LUA_TSTRING)
        p = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive in the global */
    return p;
}

/* Reads one line (no trailing newline) and pushes it; 0 at end of input. */
static int pushline(lua_State *L, int first)
{
    char *line = NULL;
    if (interactive) {
        line = readline(get_prompt(L, first));
        if (line == NULL)
            return 0;
    } else {
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            free(line);
            return 0;
        }
        if (n > 0 && line[n - 1] == '\n')
            line[n - 1] = '\0';
    }
    if (first && line[0] == '=') /* Lua 5.1's "=expr" still works */
        lua_pushfstring(L, "return %s", line + 1);
    else
        lua_pushstring(L, line);
    free(line);
    return 1;
}

static void saveline(const char *line)
{
    if (interactive && line[0] != '\0')
        add_history(line);
}

/* Tries the line as `return <line>`, so expressions print their values. */
static int addreturn(lua_State *L)
{
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK) {
        lua_remove(L, -2); /* the modified line */
        saveline(line);
    } else {
        lua_pop(L, 2); /* error message and modified line */
    }
    return status;
}

/* A syntax error at <eof> means the statement continues on the next line. */
static int incomplete(lua_State *L, int status)
{
    if (status == LUA_ERRSYNTAX) {
        size_t lmsg;
        const char *msg = lua_tolstring(L, -1, &lmsg);
        static const char mark[] = "<eof>";
        const size_t lmark = sizeof mark - 1;
        if (lmsg >= lmark && strcmp(msg + lmsg - lmark, mark) == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

static int multiline(lua_State *L)
{
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!incomplete(L, status) || !pushline(L, 0)) {
            saveline(line);
            return status;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Leaves a compiled chunk (or an error message) on the stack; -1 at EOF. */
static int loadline(lua_State *L)
{
    lua_settop(L, 0);
    if (!pushline(L, 1))
        return -1;
    int status = addreturn(L);
    if (status != LUA_OK)
        status = multiline(L);
    lua_remove(L, 1);
    return status;
}

/* Shows results through machrt.repl (tables by value), or print when that
 * module cannot be loaded. */
static void push_printer(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "machrt.repl");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
        lua_getfield(L, -1, "show");
        lua_remove(L, -2);
        if (lua_isfunction(L, -1)) return;
    }
    lua_pop(L, 1);
    lua_getglobal(L, "print");
}

static void print_results(lua_State *L)
{
    int n = lua_gettop(L);
    if (n > 0) {
        luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
        push_printer(L);
        lua_insert(L, 1);
        if (lua_pcall(L, n, 0, 0) != LUA_OK)
            report_message(progname,
                           lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
    }
}

static void do_repl(lua_State *L)
{
    const char *oldprogname = progname;
    progname = NULL;
    if (interactive)
        init_history();
    /* The usual modules as globals (mt, audio, nn, optim, data). */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "machrt.repl");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
        lua_getfield(L, -1, "setup");
        if (lua_pcall(L, 0, 0, 0) != LUA_OK) lua_pop(L, 1);
    }
    lua_settop(L, 0);
    int status;
    while ((status = loadline(L)) != -1) {
        if (status == LUA_OK)
            status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK)
            print_results(L);
        else
            report(L, status);
    }
    lua_settop(L, 0);
    if (interactive) {
        fputs("\n", stdout);
        fflush(stdout);
    }
    progname = oldprogname;
}

/* ---- MPI ----------------------------------------------------------------- */

/* Under an MPI launcher (mpirun, srun) MPI starts here, before any thread
 * exists; MACHRT_DISTRIBUTED=none|mpi|auto overrides the detection. Errors
 * of a rank then carry its name ("machrt: rank 1 of 2: ..."). */
static int start_distributed(char *rank_name, size_t len)
{
    mrt_dist_mode mode = MRT_DIST_AUTO;
    const char *want = getenv("MACHRT_DISTRIBUTED");
    if ((want && want[0] != '\0' && mrt_dist_mode_parse(want, &mode) != MRT_OK) ||
        mrt_dist_init(mode) != MRT_OK) {
        report_message(progname, mrt_last_error());
        return 0;
    }
    if (mrt_dist_size() > 1) {
        snprintf(rank_name, len, "machrt: rank %d of %d", mrt_dist_rank(), mrt_dist_size());
        progname = rank_name;
    }
    return 1;
}

/* ---- options and main ------------------------------------------------- */

enum { HAS_E = 1, HAS_I = 2, HAS_V = 4, HAS_H = 8 };

/* Returns a bit set of the options seen, or -1 on a bad option (with the
 * offending argument index in *bad); *script is the script's index, 0 when
 * there is none. */
static int collect_args(int argc, char **argv, int *script, int *bad)
{
    int flags = 0;
    *script = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            *script = i;
            return flags;
        }
        if (strcmp(a, "-") == 0) {
            *script = i;
            return flags;
        }
        if (strcmp(a, "--") == 0) {
            *script = i + 1 < argc ? i + 1 : 0;
            return flags;
        }
        if (strcmp(a, "--traceback") == 0) {
            always_traceback = 1;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
            flags |= HAS_V;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            flags |= HAS_H;
        } else if (strcmp(a, "-i") == 0) {
            flags |= HAS_I;
        } else if (a[1] == 'e' || a[1] == 'l') {
            if (a[1] == 'e')
                flags |= HAS_E;
            if (a[2] == '\0') { /* argument in the next word */
                if (i + 1 >= argc) {
                    *bad = i;
                    return -1;
                }
                i++;
            }
        } else {
            *bad = i;
            return -1;
        }
    }
    return flags;
}

/* --traceback after the script is the host's too, whatever the script: it
 * is taken out of the script's arguments, so no script's option parser has
 * to know it. Returns the new argc. */
static int take_traceback_flag(int argc, char **argv, int script)
{
    int kept = script + 1;
    for (int i = script + 1; i < argc; i++) {
        if (strcmp(argv[i], "--traceback") == 0)
            always_traceback = 1;
        else
            argv[kept++] = argv[i];
    }
    argv[kept] = NULL; /* argv[argc] is NULL, as C promises */
    return kept;
}

/* Runs -e and -l in command-line order. */
static int run_args(lua_State *L, char **argv, int optlim)
{
    for (int i = 1; i < optlim; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l'))
            continue;
        const char *extra = a[2] != '\0' ? a + 2 : argv[++i];
        int status = a[1] == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
        if (status != LUA_OK)
            return 0;
    }
    return 1;
}

static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int script = (int)lua_tointeger(L, 3);
    int flags = (int)lua_tointeger(L, 4);

    luaL_checkversion(L);
    luaL_openlibs(L);
    lua_getglobal(L, "error");
    lua_setfield(L, LUA_REGISTRYINDEX, ERROR_KEY);
    setup_paths(L);
    create_arg_table(L, argv, argc, script);

    int optlim = script > 0 ? script : argc;
    if (!run_args(L, argv, optlim))
        return 0;
    if (script > 0 && handle_script(L, argv, script) != LUA_OK)
        return 0;
    if ((flags & HAS_I) || (script == 0 && !(flags & HAS_E))) {
        if (interactive && script == 0)
            printf("machrt %s (%s)  Ctrl-D to exit\n", MACHRT_VERSION, LUA_RELEASE);
        do_repl(L);
    }
    lua_pushboolean(L, 1);
    return 1;
}

int main(int argc, char **argv)
{
    int script = 0, bad = 0;
    int flags = collect_args(argc, argv, &script, &bad);
    if (flags < 0) {
        const char *a = argv[bad];
        if (a[1] == 'e' || a[1] == 'l')
            fprintf(stderr, "%s: '%s' needs argument\n", progname, a);
        else
            fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
        print_usage(stderr);
        return EXIT_FAILURE;
    }
    if (flags & HAS_H) {
        print_usage(stdout);
        return EXIT_SUCCESS;
    }
    if (flags & HAS_V) {
        printf("machrt %s (%s)\n", MACHRT_VERSION, LUA_RELEASE);
        return EXIT_SUCCESS;
    }
    const char *want_tb = getenv("MACHRT_TRACEBACK");
    if (want_tb != NULL && want_tb[0] != '\0' && strcmp(want_tb, "0") != 0)
        always_traceback = 1;
    if (script > 0)
        argc = take_traceback_flag(argc, argv, script);
    interactive = isatty(STDIN_FILENO);
    rl_readline_name = "machrt";
    static char rank_name[64];
    if (!start_distributed(rank_name, sizeof rank_name))
        return EXIT_FAILURE;

    lua_State *L = luaL_newstate();
    if (L == NULL) {
        report_message(progname, "cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    lua_pushinteger(L, script);
    lua_pushinteger(L, flags);
    int status = lua_pcall(L, 4, 1, 0);
    int ok = lua_toboolean(L, -1);
    report(L, status);
    lua_close(L);
    if (!(status == LUA_OK && ok)) {
        int code = status == LUA_OK ? exit_status() : EXIT_FAILURE;
        /* The others may be waiting in a collective for this rank. */
        if (mrt_dist_size() > 1)
            mrt_dist_abort(code, "failed (see the error above)");
        return code;
    }
    if (mrt_dist_finalize() != MRT_OK) {
        report_message(progname, mrt_last_error());
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
