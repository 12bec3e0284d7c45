-- File helpers for the Lua tests (loaded with `require "files"`): temporary
-- folders removed when a test ends, reading files, and running a command as
-- a child process.
--
--   local F = require "files"
--   local tests, test, tmpdir, defer = F.suite()
--   test("name", function() local d = tmpdir() ... end)
--   return tests
--
-- test(name, fn) appends {name, fn'} to `tests`; when fn ends, passed or
-- failed, the cleanups it registered run, newest first: the removal of each
-- folder tmpdir made, and each function given to defer (pools to close,
-- caches to clear). Then package.path is restored and the garbage collected,
-- so nothing a test made outlives it. The error goes on to the harness
-- unchanged (a skip stays a skip), with the test's own traceback.
--
-- tmpdir() is a fresh, created folder; tmpdir{ create = false } a fresh path
-- that does not exist yet (for code that must create its output folder);
-- tmpdir{ keep = true } one that outlives the test, for what a whole file
-- shares (a corpus generated once): removed when the Lua state closes.

local sys = require "machrt.sys"

local F = {}

local function remove_tree(path)
    os.execute("rm -rf '" .. path .. "'")
end

-- Folders made with keep = true: removed when the state closes (the
-- harness's normal end; a failed run exits without closing it).
local kept = setmetatable({}, { __gc = function(list)
    for _, path in ipairs(list) do remove_tree(path) end
end })

function F.suite()
    local tests, cleanups = {}, {}

    local function defer(fn)
        cleanups[#cleanups + 1] = fn
    end

    local function test(name, fn)
        tests[#tests + 1] = { name, function()
            local saved_path = package.path
            local _ <close> = setmetatable({}, { __close = function()
                local list = cleanups
                cleanups = {}
                for i = #list, 1, -1 do pcall(list[i]) end
                package.path = saved_path
                collectgarbage("collect")
            end })
            fn()
        end }
    end

    local function tmpdir(opts)
        opts = opts or {}
        local path = os.tmpname()
        os.remove(path)
        if opts.create ~= false then sys.mkdir(path) end
        if opts.keep then
            kept[#kept + 1] = path
        else
            defer(function() remove_tree(path) end)
        end
        return path
    end

    return tests, test, tmpdir, defer
end

function F.read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

function F.exists(path)
    return sys.stat(path) ~= nil
end

-- Runs a shell command line (a child process); returns its exit status and
-- its output, stderr merged into stdout.
function F.run(cmd)
    local p = assert(io.popen("{ " .. cmd .. "\n} 2>&1"))
    local out = p:read("a")
    local _, _, code = p:close()
    return code, out
end

--- The non-empty lines of a text (a command's output).
function F.lines(text)
    local l = {}
    for line in text:gmatch("[^\n]+") do l[#l + 1] = line end
    return l
end

--- The cells of a simple CSV file (no quoted fields), one list per
--- non-empty line: a reader independent of machrt's own CSV code.
function F.csv_rows(path)
    local rows = {}
    for line in F.read(path):gmatch("[^\n]+") do
        local r = {}
        for cell in (line .. ","):gmatch("([^,]*),") do r[#r + 1] = cell end
        rows[#rows + 1] = r
    end
    return rows
end

--- Writes a mono 32-bit float WAV of `frames` samples at `rate` Hz, sample
--- i being sample(i) (1-based): bytes laid out here, not by machrt, so a
--- test can store what audio.save refuses to write (NaN, Inf).
function F.write_float_wav(path, rate, frames, sample)
    local data = {}
    for i = 1, frames do data[i] = string.pack("<f", sample(i)) end
    local body = table.concat(data)
    local f = assert(io.open(path, "wb"))
    f:write("RIFF", string.pack("<I4", 36 + #body), "WAVE",
            "fmt ", string.pack("<I4I2I2I4I4I2I2", 16, 3, 1, rate, rate * 4, 4, 32),
            "data", string.pack("<I4", #body), body)
    f:close()
end

return F
