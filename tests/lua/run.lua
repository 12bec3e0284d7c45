-- Lua test harness: `./machrt tests/lua/run.lua [pattern]` from the repo root.
--
-- Runs every tests/lua/test_*.lua in sorted order. A test file returns either
-- a list of {name, fn} pairs (run in order) or a table name -> fn (run in
-- name order). Each test runs under xpcall with a traceback and prints
--   ok - file: name | not ok - file: name (+ the error) | skip - file: name (reason)
-- and the run ends with the one line that tests/run_all.sh adds up:
--   lua: N passed, N failed[, N skipped]
-- `pattern` (a Lua pattern, or a plain substring if it is not a valid one)
-- selects tests whose "file: name" contains it.

local DIR = "tests/lua"
package.path = DIR .. "/?.lua;" .. package.path
-- The machrt host preloads its modules; this lets stock lua5.4 run the
-- suite too, against the shared library that `make` builds.
package.cpath = "build/lua/?.so;" .. package.cpath

local A = require "assert"

local pattern = (arg and arg[1]) or select(1, ...)

local function selected(label)
    if not pattern or pattern == "" then return true end
    if label:find(pattern, 1, true) then return true end
    local ok, found = pcall(string.find, label, pattern)
    return ok and found ~= nil
end

local function test_files()
    local files = {}
    local p = assert(io.popen('ls "' .. DIR .. '"'))
    for name in p:lines() do
        if name:match("^test_.*%.lua$") then files[#files + 1] = name end
    end
    p:close()
    table.sort(files)
    return files
end

-- Normalises what a test file returned into an ordered list of {name, fn}.
local function test_list(file, mod)
    if type(mod) ~= "table" then
        error(file .. " must return a table of tests, got " .. type(mod), 0)
    end
    local list = {}
    if #mod > 0 then
        for i, entry in ipairs(mod) do
            if type(entry) ~= "table" or type(entry[2]) ~= "function" then
                error(string.format("%s: entry %d is not a {name, fn} pair", file, i), 0)
            end
            list[#list + 1] = { tostring(entry[1]), entry[2] }
        end
    else
        for name, fn in pairs(mod) do
            if type(fn) == "function" then list[#list + 1] = { tostring(name), fn } end
        end
        table.sort(list, function(x, y) return x[1] < y[1] end)
    end
    return list
end

-- Keeps the traceback to the test's own frames: everything from the
-- harness's xpcall down is noise.
local function handler(err)
    if A.is_skip(err) then return err end
    local tb = debug.traceback(tostring(err), 2)
    local cut = tb:find("\n%s*%[C%]: in function 'xpcall'")
    if cut then tb = tb:sub(1, cut - 1) end
    -- The assertion helpers' own frames say nothing about the failure.
    local lines = {}
    for line in tb:gmatch("[^\n]+") do
        if not (line:find("assert.lua:", 1, true) or line:find("in function 'error'", 1, true)) then
            lines[#lines + 1] = line
        end
    end
    return table.concat(lines, "\n")
end

local function indent(text)
    return "    " .. tostring(text):gsub("\n", "\n    ")
end

local passed, failed, skipped = 0, 0, 0

for _, file in ipairs(test_files()) do
    local chunk, lerr = loadfile(DIR .. "/" .. file)
    local ok, list
    if chunk then
        ok, list = xpcall(chunk, handler)
        if ok then ok, list = pcall(test_list, file, list) end
    else
        ok, list = false, lerr
    end
    if not ok then
        -- A file that cannot even load counts as one failure, so a syntax
        -- error can never make the suite look green.
        if selected(file) then
            failed = failed + 1
            print("not ok - " .. file .. ": (loading)")
            print(indent(list))
        end
    else
        for _, t in ipairs(list) do
            local label = file .. ": " .. t[1]
            if selected(label) then
                local tok, err = xpcall(t[2], handler)
                if tok then
                    passed = passed + 1
                    print("ok - " .. label)
                elseif A.is_skip(err) then
                    skipped = skipped + 1
                    print("skip - " .. label .. " (" .. err.reason .. ")")
                else
                    failed = failed + 1
                    print("not ok - " .. label)
                    print(indent(err))
                end
            end
        end
    end
    -- Collect between files so finalizers (__gc) run while we still know
    -- which file's tensors they belong to.
    collectgarbage("collect")
end

local summary = string.format("lua: %d passed, %d failed", passed, failed)
if skipped > 0 then summary = summary .. string.format(", %d skipped", skipped) end
print(summary)
io.stdout:flush()
if failed > 0 then os.exit(1) end
