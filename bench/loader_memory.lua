-- Memory of the default experiment's data loading alone: its loaders
-- (experiments/resnet34.lua's settings, seed 1, fold 4, 4 workers, the
-- in-memory wave cache) run through one training epoch and one validation
-- pass without a model, then say what the wave cache holds, what the
-- storage allocator holds live and keeps cached (freed blocks it keeps for
-- reuse), and the process's resident memory and its peak.
--   machrt bench/loader_memory.lua [output folder]
local mt = require "machrt"
local train = require "machrt.train"
local workers = require "machrt.workers"

-- The experiment's own defaults, read from its script (it runs when loaded).
local source = assert(io.open("experiments/resnet34.lua")):read("a")
local defaults = assert(load("return " .. assert(source:match("\nlocal defaults = (%b{})"))))()

local out = arg and arg[1] or os.tmpname() .. ".d"
local cfg = train.setup(defaults, { "--output_directory=" .. out, "--environment.seed=1" })
local split = train.prepare_data(cfg, 4)
local loaders <close> = train.loaders(cfg, split)

local function status_kib(key)
    for line in io.lines("/proc/self/status") do
        local v = line:match("^" .. key .. ":%s+(%d+) kB")
        if v then return tonumber(v) end
    end
end

local clips = 0
for _, batch in loaders.train:epoch(1) do clips = clips + #batch.indices end
for _, batch in loaders.val:epoch(0) do clips = clips + #batch.indices end
local m, c = mt.memory_stats(), workers.cache_stats()
print(require("machrt.cpuinfo").line())
print(string.format("loaders of the default experiment, %d workers, %d clips (training epoch + validation)",
                    cfg.environment.number_of_workers, clips))
print(string.format("  wave cache %d entries, %.1f MB; storage live %.1f MB, cached (freed, kept) %.1f MB; "
                    .. "RSS %.1f MB, peak %.1f MB", c.entries, c.bytes / 1e6, m.live / 1e6, m.cached / 1e6,
                    status_kib("VmRSS") * 1024 / 1e6, status_kib("VmHWM") * 1024 / 1e6))
