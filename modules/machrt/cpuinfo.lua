-- The machine a benchmark ran on, for the line printed beside its figures:
-- the CPU's model, the vector and matrix extensions the kernels dispatch on
-- (avx*, amx*, fma), and the load average.
--
--   local cpuinfo = require "machrt.cpuinfo"
--   local model, isa, flags = cpuinfo.cpu()   -- "AMD EPYC", "fma avx avx2", { avx2 = true, ... }
--   cpuinfo.loadavg()                          -- "0.52 0.61 0.70"
--   cpuinfo.line()                             -- "cpu: AMD EPYC; flags: fma avx avx2; load average ..."
local M = {}

--- The CPU's model name, its avx/amx/fma flags as one string, and every
--- flag as a set ("unknown", "", {} where /proc/cpuinfo cannot be read).
function M.cpu()
    local f = io.open("/proc/cpuinfo")
    if not f then return "unknown", "", {} end
    local text = f:read("a")
    f:close()
    local model = text:match("model name%s*:%s*([^\n]+)") or "unknown"
    local flags, wanted = {}, {}
    for flag in (text:match("flags%s*:%s*([^\n]+)") or ""):gmatch("%S+") do
        if flag:match("^avx") or flag:match("^amx") or flag == "fma" then wanted[#wanted + 1] = flag end
        flags[flag] = true
    end
    return model, table.concat(wanted, " "), flags
end

--- The 1, 5 and 15 minute load averages.
function M.loadavg()
    local f = io.open("/proc/loadavg")
    local s = f and f:read("l") or "?"
    if f then f:close() end
    return s:match("^(%S+ %S+ %S+)") or s
end

--- One line: the model, the flags and the load average.
function M.line()
    local model, isa = M.cpu()
    return ("cpu: %s; flags: %s; load average %s"):format(model, isa, M.loadavg())
end

return M
