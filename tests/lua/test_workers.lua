-- machrt.workers: the worker pool (own Lua state per thread, results by id in
-- any order, job errors, close), the values that cross between states
-- (workers.roundtrip and the pool), and the process-wide tensor cache.
-- Job modules are written into a temporary folder put on package.path.

local mt = require "machrt"
local workers = require "machrt.workers"
local A = require "assert"

local F = require "files"

local T, test, tmpdir, defer = F.suite()

-- A fresh folder holding job modules name -> source, on package.path until
-- the test ends.
local function modules(sources)
    local dir = tmpdir()
    for name, src in pairs(sources) do
        local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
        f:write(src)
        f:close()
        defer(function() package.loaded[name] = nil end)
    end
    package.path = dir .. "/?.lua;" .. package.path
    return dir
end

-- A pool closed when the test ends, whatever happens.
local function pool(opts)
    local p = workers.Pool(opts)
    defer(function() p:close() end)
    return p
end

-- Echoes its argument with the worker's config and index; `calls` counts
-- how often this worker's factory ran (once per worker state).
local ECHO = [[
local mt = require "machrt"
local calls = 0
return function(config, index)
    calls = calls + 1
    return function(args)
        local t0 = mt.clock()
        while mt.clock() - t0 < (args.wait or 0) do end
        if args.fail then error("boom " .. tostring(args.fail)) end
        if args.fill then args.fill:fill(args.value) end
        if args.give_function then return { f = print } end
        return { args = args, config = config, index = index, calls = calls, done = mt.clock() }
    end
end
]]

test("results come back by id, whatever order jobs finish in", function()
    modules({ wt_echo = ECHO })
    local p = pool{ module = "wt_echo", config = { scale = 2 }, workers = 3 }
    A.eq(tostring(p), "workers.Pool(3 workers)")
    -- Job 1 runs longest, job 3 not at all: they finish 3, 2, 1.
    p:submit(1, { n = 1, wait = 0.2 })
    p:submit(2, { n = 2, wait = 0.1 })
    p:submit(3, { n = 3, wait = 0 })
    local r1, r2, r3 = p:take(1), p:take(2), p:take(3)
    A.eq({ r1.args.n, r2.args.n, r3.args.n }, { 1, 2, 3 })
    A.truthy(r3.done < r1.done, "job 3 should have finished before job 1")
    local seen = {}
    for _, r in ipairs({ r1, r2, r3 }) do
        A.eq(r.config, { scale = 2 })
        A.truthy(r.index >= 1 and r.index <= 3, "worker index " .. tostring(r.index))
        A.eq(r.calls, 1, "a worker's factory runs once")
        seen[r.index] = true
    end
    -- Three jobs blocked at once need three workers.
    A.eq(seen, { true, true, true })
    -- Taking in another order than submitted, over more jobs than workers.
    for id = 10, 19 do p:submit(id, { n = id }) end
    for id = 19, 10, -1 do A.eq(p:take(id).args.n, id) end
end)

test("values cross between states intact", function()
    modules({ wt_echo = ECHO })
    local p = pool{ module = "wt_echo", workers = 1 }
    local bytes = "a\0b\255\n" .. string.rep("x", 1000)
    local args = {
        int = math.maxinteger, neg = math.mininteger, float = 2.0, frac = -1.5e-300,
        inf = math.huge, t = true, f = false, s = bytes, empty = "",
        list = { 1, "two", { 3, { 4 } } },
        [7] = "seven", [2.5] = "float key", [true] = "boolean key",
    }
    p:submit(1, args)
    local got = p:take(1).args
    A.eq(got, args)
    A.eq(math.type(got.int), "integer")
    A.eq(math.type(got.float), "float")
    A.eq(got.s, bytes)
    p:submit(2, { nan = 0 / 0 })
    local n = p:take(2)
    A.truthy(n.args.nan ~= n.args.nan, "NaN must stay NaN")
    A.eq(n.config, nil)
end)

test("a tensor crosses by reference: a worker's writes are seen by the caller", function()
    modules({ wt_echo = ECHO })
    local p = pool{ module = "wt_echo", workers = 2 }
    local t = mt.zeros{ 3, 4 }
    p:submit(5, { fill = t:narrow(2, 2, 2), value = 7 })
    local r = p:take(5)
    A.tensor_near(t, { { 0, 7, 7, 0 }, { 0, 7, 7, 0 }, { 0, 7, 7, 0 } }, 0)
    -- The returned tensor is the same view of the same storage.
    A.shape_eq(r.args.fill, { 3, 2 })
    t:fill(1)
    A.tensor_near(r.args.fill, { { 1, 1 }, { 1, 1 }, { 1, 1 } }, 0)
end)

test("roundtrip: the same serialization in this state", function()
    A.eq(workers.roundtrip(nil), nil)
    A.eq(workers.roundtrip(false), false)
    A.eq(math.type(workers.roundtrip(3)), "integer")
    A.eq(math.type(workers.roundtrip(3.0)), "float")
    A.eq(workers.roundtrip("x\0y"), "x\0y")
    local v = { a = { b = { c = "d" } }, 10, 20, [-1] = 0.5 }
    local r = workers.roundtrip(v)
    A.eq(r, v)
    A.truthy(r ~= v and r.a ~= v.a, "roundtrip must build new tables")
    local t = mt.tensor{ 1, 2, 3, 4, 5 }
    local view = workers.roundtrip({ x = t:narrow(1, 2, 3) }).x
    A.tensor_near(view, { 2, 3, 4 }, 0)
    t:set(40, 4)
    A.eq(view:get(3), 40.0, "the copy must share the original's storage")
end)

test("functions, coroutines and other userdata are refused by name", function()
    A.raises(function() workers.roundtrip(print) end, "cannot pass a function")
    A.raises(function() workers.roundtrip({ x = { y = function() end } }) end, "cannot pass a function")
    A.raises(function() workers.roundtrip(coroutine.create(print)) end, "cannot pass a thread")
    A.raises(function() workers.roundtrip({ io.stdout }) end, "cannot pass a userdata")
    A.raises(function() workers.roundtrip({ [print] = 1 }) end, "cannot pass a function")
    local t = mt.tensor{ 1, 2 }
    t:release()
    A.raises(function() workers.roundtrip(t) end, "released tensor")
    -- The stack stays usable after a refused value deep in a table.
    for _ = 1, 100 do pcall(workers.roundtrip, { 1, { 2, { 3, print } } }) end
    A.eq(workers.roundtrip({ 1, { 2 } }), { 1, { 2 } })
end)

test("tables nested deeper than 32 levels are refused (cycles too)", function()
    local function nest(n)
        local t = { leaf = true }
        for _ = 2, n do t = { t } end
        return t
    end
    local r = workers.roundtrip(nest(32))
    local depth = 1
    while r[1] do r, depth = r[1], depth + 1 end
    A.eq(depth, 32)
    A.eq(r.leaf, true)
    A.raises(function() workers.roundtrip(nest(33)) end, "nested deeper than 32")
    local cyc = {}
    cyc.self = cyc
    A.raises(function() workers.roundtrip(cyc) end, "nested deeper than 32", "cycle")
end)

test("a job's error is raised by take, naming the job; the pool keeps working", function()
    modules({ wt_echo = ECHO })
    local p = pool{ module = "wt_echo", workers = 2 }
    p:submit(1, { n = 1 })
    p:submit(2, { fail = "two" })
    p:submit(3, { n = 3 })
    A.eq(p:take(1).args.n, 1)
    A.raises(function() p:take(2) end, "worker job 2 failed:", "boom two", "wt_echo")
    A.eq(p:take(3).args.n, 3)
    -- The failed job was taken: its id is free again.
    A.raises(function() p:take(2) end, "no job 2 was submitted")
    -- A result that cannot cross is the job's error too.
    p:submit(4, { give_function = true })
    A.raises(function() p:take(4) end, "worker job 4 failed", "job result: cannot pass a function")
    -- Bad arguments are refused at submit, in the caller.
    A.raises(function() p:submit(5, { f = print }) end, "job argument: cannot pass a function")
    A.raises(function() p:take(5) end, "no job 5")
end)

test("unknown ids, taken ids and duplicate pending ids are errors", function()
    modules({ wt_echo = ECHO })
    local p = pool{ module = "wt_echo", workers = 1 }
    A.raises(function() p:take(99) end, "no job 99 was submitted")
    p:submit(1, { n = 1 })
    A.raises(function() p:submit(1, { n = 2 }) end, "job 1 was already submitted and not yet taken")
    A.eq(p:take(1).args.n, 1)
    A.raises(function() p:take(1) end, "no job 1")
    p:submit(1, { n = 3 })
    A.eq(p:take(1).args.n, 3)
end)

test("start-up failures and bad options are reported by Pool", function()
    modules({
        wt_factory_fails = "return function(config) error('no config ' .. config.name) end",
        wt_not_function = "return 42",
        wt_factory_returns_nil = "return function() return nil end",
        wt_syntax = "return function(",
        wt_echo = ECHO,
    })
    A.raises(function() workers.Pool{ module = "wt_factory_fails", config = { name = "x" } } end,
        "starting module 'wt_factory_fails' failed", "no config x")
    A.raises(function() workers.Pool{ module = "wt_not_function", workers = 2 } end,
        "must return a function factory", "number")
    A.raises(function() workers.Pool{ module = "wt_factory_returns_nil" } end,
        "must return the job function, got a nil")
    A.raises(function() workers.Pool{ module = "wt_syntax" } end, "starting module 'wt_syntax' failed")
    A.raises(function() workers.Pool{ module = "wt_no_such_module" } end,
        "starting module 'wt_no_such_module' failed", "not found")
    A.raises(function() workers.Pool{ workers = 1 } end, "'module'", "required")
    A.raises(function() workers.Pool{ module = "wt_echo", workers = 0 } end, "between 1 and 64", "got 0")
    A.raises(function() workers.Pool{ module = "wt_echo", workers = 65 } end, "between 1 and 64")
    A.raises(function() workers.Pool{ module = "wt_echo", config = { f = print } } end,
        "workers.Pool config: cannot pass a function")
end)

test("close is idempotent, also through <close> and the collector", function()
    modules({ wt_echo = ECHO })
    local p = workers.Pool{ module = "wt_echo", workers = 2 }
    -- Jobs still queued or running when the pool closes are dropped.
    for id = 1, 6 do p:submit(id, { wait = 0.02 }) end
    p:close()
    p:close()
    A.eq(tostring(p), "workers.Pool(closed)")
    A.raises(function() p:submit(7, {}) end, "the pool has been closed")
    A.raises(function() p:take(1) end, "the pool has been closed")
    local kept
    do
        local q <close> = workers.Pool{ module = "wt_echo", workers = 1 }
        kept = q
        q:submit(1, { n = 1 })
        A.eq(q:take(1).args.n, 1)
    end
    A.eq(tostring(kept), "workers.Pool(closed)")
    kept:close()
    for _ = 1, 3 do workers.Pool{ module = "wt_echo", workers = 2 }:submit(1, { wait = 0.01 }) end
    collectgarbage("collect")
    collectgarbage("collect")
end)

test("cache: put, get (shared storage), first put wins, stats, clear", function()
    workers.cache_clear()
    defer(workers.cache_clear)
    A.eq(workers.cache_stats(), { entries = 0, bytes = 0, hits = 0, misses = 0 })
    A.eq(workers.cache_get("a"), nil)
    local a = mt.tensor{ 1, 2, 3 }
    workers.cache_put("a", a)
    workers.cache_put("b", mt.zeros{ 2, 5 }:narrow(2, 1, 2))
    workers.cache_put("a", mt.tensor{ 9, 9, 9, 9 })
    local got = workers.cache_get("a")
    A.tensor_near(got, { 1, 2, 3 }, 0)
    a:set(5, 2)
    A.eq(got:get(2), 5.0, "the cached tensor shares the put tensor's storage")
    A.eq(workers.cache_get("c"), nil)
    A.shape_eq(workers.cache_get("b"), { 2, 2 })
    -- float32: 3 elements, then a 2x2 view.
    A.eq(workers.cache_stats(), { entries = 2, bytes = 12 + 16, hits = 2, misses = 2 })
    -- Keys are byte strings: a NUL inside one is part of the key.
    workers.cache_put("k\0one", mt.tensor{ 1 })
    workers.cache_put("k\0two", mt.tensor{ 2 })
    A.tensor_near(workers.cache_get("k\0one"), { 1 }, 0)
    A.tensor_near(workers.cache_get("k\0two"), { 2 }, 0)
    A.eq(workers.cache_get("k"), nil)
    A.eq(workers.cache_stats().entries, 4)
    workers.cache_clear()
    A.eq(workers.cache_stats(), { entries = 0, bytes = 0, hits = 0, misses = 0 })
    A.eq(workers.cache_get("a"), nil)
    A.tensor_near(got, { 1, 5, 3 }, 0)  -- still alive for its holder
end)

test("cache: one cache for the caller and every worker state", function()
    workers.cache_clear()
    defer(workers.cache_clear)
    modules({ wt_cache = [[
local mt = require "machrt"
local workers = require "machrt.workers"
return function()
    return function(args)
        if args.put then workers.cache_put(args.put, mt.full({ 2 }, args.value)) end
        local t = workers.cache_get(args.get)
        return t and t:sum() or "absent"
    end
end
]] })
    workers.cache_put("from caller", mt.tensor{ 1, 2, 3 })
    local p = pool{ module = "wt_cache", workers = 2 }
    p:submit(1, { get = "from caller" })
    A.eq(p:take(1), 6.0)
    p:submit(2, { put = "from worker", value = 4, get = "nothing" })
    A.eq(p:take(2), "absent")
    A.tensor_near(workers.cache_get("from worker"), { 4, 4 }, 0)
    p:submit(3, { get = "from worker" })
    A.eq(p:take(3), 8.0)
end)

return T
