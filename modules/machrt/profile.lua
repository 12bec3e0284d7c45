-- machrt.profile: where a training run's wall time goes, part by part, cheap
-- enough to be always on (a clock reading at each boundary: well under a
-- millisecond per batch).
--
--   local profile = require "machrt.profile"
--   local prof = profile.new()                       -- the clock starts now (prof.start)
--   for b, batch in prof:wait("data loading", loader:epoch(e)) do   -- time spent waiting
--       local x = prof:time("front end", front, batch.wave)          -- returns front's results
--   end
--   prof:add("optimizer", seconds)                   -- a part timed by its owner (machrt.stepper)
--   prof:log()                                       -- the table, peak RSS included
--   prof:write(dir .. "/" .. profile.FILE)           -- the same as JSON
--
-- Parts are exclusive: each second of the wall time is counted once, and
-- what no part claims is "other". The loader's workers prepare batches in
-- the background; a batch's `timing` field (seconds by part, from
-- machrt.data.clips) is summed separately as work that overlapped the
-- parts above; only the time the training loop waited for a batch counts
-- against the wall time.
--
-- On a device the host returns before the kernels finish: a part's time is
-- the host's, and kernel time lands in whichever part next waits on the
-- device (the loss read-back of forward + backward, mostly).

local mt = require "machrt"

local M = {}

M.FILE = "profile.json"

-- The parts of a training run, in the order of the table; a part not
-- listed here is added after them in the order it first appears.
M.PARTS = { "setup", "data loading", "front end", "forward + backward", "optimizer",
            "evaluation", "checkpoint and writes", "interpretations", "scorer" }

local Profile = {}
Profile.__index = Profile
M.Profile = Profile

function M.new()
    return setmetatable({ start = mt.clock(), seconds = {}, order = {}, background = {},
                          background_order = {}, batches = 0 }, Profile)
end

local function add_to(totals, order, part, seconds)
    if totals[part] == nil then
        totals[part] = 0
        order[#order + 1] = part
    end
    totals[part] = totals[part] + seconds
end

--- Adds `seconds` to `part`.
function Profile:add(part, seconds) add_to(self.seconds, self.order, part, seconds) end

--- Calls fn(...), adds its time to `part`, returns its results.
function Profile:time(part, fn, ...)
    local t0 = mt.clock()
    local results = table.pack(fn(...))
    self:add(part, mt.clock() - t0)
    return table.unpack(results, 1, results.n)
end

--- Wraps an iterator of (b, batch): the time each call takes (waiting for
--- the loader) goes to `part`, and the batches' worker timings are summed.
function Profile:wait(part, iter)
    return function()
        local t0 = mt.clock()
        local b, batch = iter()
        self:add(part, mt.clock() - t0)
        if type(batch) == "table" and type(batch.timing) == "table" then
            self.batches = self.batches + 1
            for k, s in pairs(batch.timing) do add_to(self.background, self.background_order, k, s) end
        end
        return b, batch
    end
end

--- Peak resident set size of this process in bytes (Linux VmHWM), or nil
--- where /proc does not say.
function M.peak_rss()
    local f = io.open("/proc/self/status", "r")
    if not f then return nil end
    local text = f:read("a")
    f:close()
    local kb = text:match("VmHWM:%s*(%d+)%s*kB")
    return kb and tonumber(kb) * 1024 or nil
end

local function ordered_parts(self)
    local list, seen = {}, {}
    for _, p in ipairs(M.PARTS) do
        if self.seconds[p] then list[#list + 1], seen[p] = p, true end
    end
    for _, p in ipairs(self.order) do
        if not seen[p] then list[#list + 1] = p end
    end
    return list
end

--- The profile so far: {wall_seconds, parts = {{name, seconds, share}...}
--- (ending with "other"), background = {{name, seconds}...} (the loader
--- workers' time, overlapped), batches (with worker timings), peak_rss_bytes}.
function Profile:summary()
    local wall = mt.clock() - self.start
    local parts, claimed = {}, 0
    for _, p in ipairs(ordered_parts(self)) do
        local s = self.seconds[p]
        claimed = claimed + s
        parts[#parts + 1] = { name = p, seconds = s, share = wall > 0 and s / wall or 0 }
    end
    local other = math.max(wall - claimed, 0)
    parts[#parts + 1] = { name = "other", seconds = other, share = wall > 0 and other / wall or 0 }
    local background = {}
    for _, p in ipairs(self.background_order) do
        background[#background + 1] = { name = p, seconds = self.background[p] }
    end
    -- A batch's timing table has no order of its own.
    table.sort(background, function(a, b) return a.name < b.name end)
    return { wall_seconds = wall, parts = parts, background = background, batches = self.batches,
             peak_rss_bytes = M.peak_rss() }
end

--- The summary as a table in the log (machrt.log), with a title line.
function Profile:log(title, s)
    local log = require "machrt.log"
    s = s or self:summary()
    local rows = {}
    for _, p in ipairs(s.parts) do
        rows[#rows + 1] = { p.name, string.format("%.1f", p.seconds), string.format("%.1f %%", 100 * p.share) }
    end
    log.info("%s: %.1f s wall, peak RSS %s", title or "profile", s.wall_seconds,
             s.peak_rss_bytes and string.format("%.2f GB", s.peak_rss_bytes / 1e9) or "unknown")
    log.table({ "part", "seconds", "share of wall" }, rows)
    if #s.background > 0 then
        local done = {}
        for _, p in ipairs(s.background) do done[#done + 1] = string.format("%s %.1f s", p.name, p.seconds) end
        log.info("loader workers, overlapped with the above (%d batches): %s", s.batches, table.concat(done, ", "))
    end
    return s
end

--- Writes the summary as JSON to `path`.
function Profile:write(path, s)
    local sys = require "machrt.sys"
    sys.write_file(path, sys.json_encode(s or self:summary(), { indent = true }) .. "\n")
end

return M
