-- Compares a machrt training trace (MACHRT_TRACE=DIR, machrt.trace) with its
-- PyTorch twin's (tests/fixtures/trajectory_twin.py) step by step: the
-- largest relative difference of loss, gradient norm and learning rate,
-- the evaluations side by side, and both loss curves on one plot.
--
--   ./machrt scripts/compare_trajectories.lua MACHRT_DIR TWIN_DIR [--noise TWIN2_DIR]
--       [--plot loss.png] [--steps]
--
-- --noise: a second twin trace (other threads, oneDNN off): its distance to
-- TWIN_DIR is PyTorch's float noise against itself, printed alongside.
-- --steps prints every step's values. A teacher-forced twin's trace adds
-- how far each step lands from machrt's weights, buffers and moments.

local cli = require "machrt.cli"
local csv = require "machrt.data.csv"
local plot = require "machrt.plot"
local sys = require "machrt.sys"

local USAGE = "usage: machrt scripts/compare_trajectories.lua MACHRT_DIR TWIN_DIR [--noise TWIN2_DIR] "
              .. "[--plot loss.png] [--steps]"
local CLI = { name = "compare_trajectories", usage = USAGE, positional = true,
              options = { noise = "value", plot = "value", steps = "flag" } }
local opts = cli.parse(arg, CLI)
if #opts.positional ~= 2 then cli.fail(CLI, "give the machrt trace folder and the twin's") end

local function rows_of(path, columns)
    if not sys.stat(path) then cli.fail(CLI, path .. " does not exist") end
    local df = csv.read(path)
    local out = {}
    for _, c in ipairs(columns) do
        local ok, col = pcall(df.column, df, c)
        if not ok then cli.fail(CLI, string.format("%s has no column '%s'", path, c)) end
        for i, v in ipairs(col) do
            out[i] = out[i] or {}
            out[i][c] = tonumber(v)
        end
    end
    return out
end

local STEP = { "step", "loss", "grad_norm", "lr" }
local VAL = { "evaluation", "step", "loss", "f1", "accuracy" }

local function relative(a, b) return math.abs(a - b) / math.max(math.abs(a), math.abs(b), 1e-30) end

-- The largest relative difference of each step column, and at which step.
local function worst(a, b, label)
    if #a ~= #b then
        cli.fail(CLI, string.format("%s: %d steps against %d: the traces are not of one run", label, #a, #b))
    end
    local out = {}
    for _, c in ipairs{ "loss", "grad_norm", "lr" } do
        local m, at = 0, 1
        for i = 1, #a do
            local d = relative(a[i][c], b[i][c])
            if d > m then m, at = d, a[i].step end
        end
        out[c] = { max = m, step = at }
    end
    return out
end

local mdir, tdir = opts.positional[1], opts.positional[2]
local m = rows_of(mdir .. "/trace.csv", STEP)
local t = rows_of(tdir .. "/trace.csv", STEP)
local vs = worst(m, t, "machrt vs twin")
local noise = opts.noise and worst(rows_of(opts.noise .. "/trace.csv", STEP), t, "twin vs twin")

print(string.format("%d steps; largest relative difference per step (at step):", #m))
print(string.format("  %-10s %-24s %s", "", "machrt vs twin", noise and "twin vs twin (float noise)" or ""))
for _, c in ipairs{ "loss", "grad_norm", "lr" } do
    print(string.format("  %-10s %.3e (step %4d)      %s", c, vs[c].max, vs[c].step,
                        noise and string.format("%.3e (step %d)", noise[c].max, noise[c].step) or ""))
end
-- Step 1 starts from the same weights: loss and gradient differ by rounding only.
print(string.format("  step 1: loss %.3e, grad_norm %.3e", relative(m[1].loss, t[1].loss),
                    relative(m[1].grad_norm, t[1].grad_norm)))

-- A teacher-forced twin (--teacher-forced): how far each step lands from
-- machrt's state after it, per kind of tensor.
local forced = csv.read(tdir .. "/trace.csv")
local has_forced = false
for _, c in ipairs(forced.columns) do has_forced = has_forced or c == "buffer_diff" end
if has_forced then
    print("  teacher-forced, largest relative difference after a step (tensor, step):")
    for _, kind in ipairs{ "weight", "buffer", "moment" } do
        local values, names = forced:column(kind .. "_diff"), forced:column(kind .. "_worst")
        local m, at = -1, 1
        for i, v in ipairs(values) do
            if tonumber(v) > m then m, at = tonumber(v), i end
        end
        print(string.format("    %-8s %.3e (%s, step %d)", kind .. "s", m, names[at], at))
    end
end

if opts.steps then
    print("\n  step        loss machrt     loss twin  grad_norm machrt  grad_norm twin")
    for i = 1, #m do
        print(string.format("  %4d  %14.7g  %12.7g  %16.7g  %14.7g", m[i].step, m[i].loss, t[i].loss,
                            m[i].grad_norm, t[i].grad_norm))
    end
end

local mv_path, tv_path = mdir .. "/val.csv", tdir .. "/val.csv"
if sys.stat(mv_path) and sys.stat(tv_path) then
    local mv, tv = rows_of(mv_path, VAL), rows_of(tv_path, VAL)
    print("\n  evaluation  step  val loss machrt / twin    F1 machrt / twin   accuracy machrt / twin")
    for i = 1, math.min(#mv, #tv) do
        print(string.format("  %10d  %4d  %10.5f / %-10.5f  %7.4f / %-7.4f  %7.4f / %-7.4f", mv[i].evaluation,
                            mv[i].step, mv[i].loss, tv[i].loss, mv[i].f1, tv[i].f1, mv[i].accuracy, tv[i].accuracy))
    end
end

if opts.plot then
    local function series(name, rows)
        local x, y = {}, {}
        for i, r in ipairs(rows) do x[i], y[i] = r.step, r.loss end
        return { name = name, x = x, y = y }
    end
    local list = { series("machrt", m), series("PyTorch twin", t) }
    if opts.noise then list[3] = series("PyTorch twin (noise run)", rows_of(opts.noise .. "/trace.csv", STEP)) end
    plot.lines(opts.plot, list, { title = "training loss per step: machrt and its PyTorch twin",
                                  xlabel = "optimizer step", ylabel = "BCE loss" })
    print("\nloss curves: " .. opts.plot)
end
