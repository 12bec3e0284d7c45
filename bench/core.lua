-- Core benchmarks: matmul through the tensor API next to OpenBLAS called
-- directly, elementwise add bandwidth on 64 MiB tensors, and the host's
-- start-up time. Run by `make bench`, or alone:
--
--   ./machrt bench/core.lua [BUILD (default build)] [HOST (default ./machrt)]
local mt = require "machrt"
local cli = require "machrt.cli"

local CLI = { name = "core", positional = true, options = {},
              usage = "usage: machrt bench/core.lua [BUILD (default build)] [HOST (default ./machrt)]\n" }
local positional = cli.parse(arg, CLI).positional
local build = positional[1] or "build"

local function best_of(reps, fn)
    local best = math.huge
    for _ = 1, reps do
        -- Collect the previous result outside the timed region, so the op reuses
        -- a cached block as it does in a steady-state loop.
        collectgarbage()
        local t0 = mt.clock(); fn(); local dt = mt.clock() - t0
        if dt < best then best = dt end
    end
    return best
end

print(string.format("threads: %d", mt.get_num_threads()))
print("")
print(string.format("%-28s %14s %14s %8s", "matmul (n x n x n)", "tensor API", "OpenBLAS", "ratio"))
-- The VM's neighbours make single runs noisy, so both sides are measured in
-- alternating rounds and each keeps its best.
local direct, api = {}, {}
local sizes = {1024, 2048}
local mats = {}
for _, n in ipairs(sizes) do mats[n] = {mt.rand{n, n}, mt.rand{n, n}} end
-- The direct side is a small C program the bench target builds; run alone,
-- this script measures what it can and says how to get the rest.
local blas_direct = build .. "/bench/blas_direct"
local have_direct = require("machrt.sys").stat(blas_direct) ~= nil
if not have_direct then
    print(string.format("(%s is not built: `make %s` or `make bench` adds the OpenBLAS column)",
                        blas_direct, blas_direct))
end
for _ = 1, 3 do
    local p = have_direct and assert(io.popen(blas_direct .. " 1024 2048"))
    if p then
        for line in p:lines() do
            local n, g = line:match("^sgemm (%d+) ([%d.]+)")
            if n then direct[tonumber(n)] = math.max(direct[tonumber(n)] or 0, tonumber(g)) end
        end
        p:close()
    end
    for _, n in ipairs(sizes) do
        local a, b = mats[n][1], mats[n][2]
        local t = best_of(n <= 1024 and 20 or 5, function() a:matmul(b) end)
        api[n] = math.max(api[n] or 0, 2 * n * n * n / t * 1e-9)
    end
end
for _, n in ipairs(sizes) do
    if direct[n] then
        print(string.format("%-28s %9.1f GF/s %9.1f GF/s %7.1f%%", ("sgemm %d"):format(n), api[n],
            direct[n], 100 * api[n] / direct[n]))
    else
        print(string.format("%-28s %9.1f GF/s %14s", ("sgemm %d"):format(n), api[n], "-"))
    end
end
print("")
local n = 64 * 1024 * 1024 // 4
local a, b = mt.rand{n}, mt.rand{n}
local c = a + b
local t_out = best_of(10, function() c = nil; c = a + b end)
local t_in = best_of(10, function() a:add_(b) end)
local bytes = 3 * n * 4
print(string.format("%-28s %9.2f GB/s  (3 x 64 MiB moved, new output each time)", "add  c = a + b", bytes / t_out / 1e9))
print(string.format("%-28s %9.2f GB/s  (3 x 64 MiB moved)", "add  a:add_(b)", bytes / t_in / 1e9))

print("")
local runs = 30
local exe = positional[2] or "./machrt"
local function time_cmd(cmd)
    local t0 = mt.clock()
    for _ = 1, runs do os.execute(cmd) end
    return (mt.clock() - t0) / runs
end
local t_host = time_cmd(exe .. " -e ''")
local t_true = time_cmd("true")
print(string.format("%-28s %9.2f ms   (mean of %d, shell spawn of %.2f ms subtracted)",
    "start-up  machrt -e ''", (t_host - t_true) * 1e3, runs, t_true * 1e3))
