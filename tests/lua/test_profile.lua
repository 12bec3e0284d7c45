-- machrt.profile: exclusive parts that add up to the wall time with
-- "other", results passed through, the loader wait and the workers'
-- timings, peak RSS, the JSON it writes.

local A = require "assert"
local mt = require "machrt"
local sys = require "machrt.sys"
local profile = require "machrt.profile"
local F = require "files"
local tests, test, tmpdir = F.suite()

local function busy(seconds)
    local t0 = mt.clock()
    while mt.clock() - t0 < seconds do end
end

test("parts and other add up to the wall time, in the table's order", function()
    local p = profile.new()
    local a, b = p:time("optimizer", function(x, y) busy(0.02); return x + y, "second" end, 1, 2)
    A.eq(a, 3)
    A.eq(b, "second", "every result of the timed function")
    p:time("front end", busy, 0.01)
    p:add("a part of its own", 0.001)
    busy(0.01) -- claimed by no part: other
    local s = p:summary()
    local names, sum = {}, 0
    for _, part in ipairs(s.parts) do
        names[#names + 1] = part.name
        sum = sum + part.seconds
        A.near(part.share, part.seconds / s.wall_seconds, 1e-12, part.name .. " share")
    end
    A.eq(names, { "front end", "optimizer", "a part of its own", "other" })
    A.near(sum, s.wall_seconds, 1e-9)
    A.truthy(s.parts[2].seconds >= 0.02, "optimizer time")
    -- busy(0.01) unclaimed, less the 0.001 added by hand without elapsing
    A.truthy(s.parts[4].seconds >= 0.009, "other holds the unclaimed time")
end)

test("wait times the iterator and sums the batches' worker timings", function()
    local p = profile.new()
    local batches = { { timing = { decode = 0.5, crop = 0.25 } }, { timing = { decode = 1 } }, {} }
    local k = 0
    local function iter()
        k = k + 1
        busy(0.005)
        if batches[k] then return k, batches[k] end
    end
    local seen = {}
    for b, batch in p:wait("data loading", iter) do seen[#seen + 1] = b; A.eq(batch, batches[b]) end
    A.eq(seen, { 1, 2, 3 })
    A.truthy(p.seconds["data loading"] >= 0.02, "four calls (the last one ends the loop)")
    local s = p:summary()
    A.eq(s.batches, 2, "batches that carried a timing")
    A.eq(s.background, { { name = "crop", seconds = 0.25 }, { name = "decode", seconds = 1.5 } }, "by name")
end)

test("peak RSS, the log table and profile.json", function()
    local rss = profile.peak_rss()
    if sys.stat("/proc/self/status") then
        A.truthy(rss and rss > 1e6, "a process holds more than a megabyte")
    end
    local p = profile.new()
    p:add("evaluation", 0)
    local dir = tmpdir()
    p:write(dir .. "/" .. profile.FILE)
    local back = sys.json_decode(F.read(dir .. "/" .. profile.FILE))
    A.eq(back.parts[1].name, "evaluation")
    A.eq(back.parts[2].name, "other")
    A.truthy(back.wall_seconds >= 0)
    local s = p:log("test profile")
    A.eq(#s.parts, 2)
end)

return tests
