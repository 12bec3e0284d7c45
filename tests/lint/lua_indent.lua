-- `make lint`: every Lua file of the project indents its blocks by four
-- spaces and uses no tabs. A line that opens a block (ends in `then`, `do`,
-- `else`, `repeat`, a function header, `{` or `(`) must be followed by a line
-- indented four spaces deeper, unless that line closes the block. Lines that
-- continue an expression may align however reads best; text inside long
-- strings and long comments is not code and is left alone.
-- Usage: machrt tests/lint/lua_indent.lua FILE...
--        machrt tests/lint/lua_indent.lua --from 2 FILE...   (re-indent, then check)
local UNIT = 4

-- Marks the lines whose start lies inside a long string or long comment, so
-- that their leading spaces are content, not indentation.
local function long_bracket_lines(text)
    local inside = {}
    local line, i, n = 1, 1, #text
    local function skip_long(level_eqs, from)
        local close = "]" .. level_eqs .. "]"
        local stop = text:find(close, from, true)
        local last = stop and stop + #close - 1 or n
        for _ in text:sub(from, last):gmatch("\n") do
            line = line + 1
            inside[line] = true
        end
        return last + 1
    end
    while i <= n do
        local c = text:sub(i, i)
        if c == "\n" then
            line = line + 1
            i = i + 1
        elseif c == "-" and text:sub(i, i + 1) == "--" then
            local eqs = text:match("^%[(=*)%[", i + 2)
            if eqs then
                i = skip_long(eqs, i + 2)
            else
                local eol = text:find("\n", i, true)
                i = eol or n + 1
            end
        elseif c == "[" and text:match("^%[=*%[", i) then
            local eqs = text:match("^%[(=*)%[", i)
            i = skip_long(eqs, i)
        elseif c == '"' or c == "'" then
            local j = i + 1
            while j <= n do
                local d = text:sub(j, j)
                if d == "\\" then j = j + 2
                elseif d == c or d == "\n" then break
                else j = j + 1 end
            end
            i = j + 1
        else
            i = i + 1
        end
    end
    return inside
end

local function strip_comment(code)
    -- Good enough for the block test: a `--` inside a string only makes a
    -- line look as if it ended earlier, which can hide a finding, not invent one.
    return (code:gsub("%s*%-%-.*$", ""))
end

local OPENERS = {"then$", "do$", "else$", "repeat$", "{$", "%($", "function%s*[%w_.:]*%s*%b()$"}
local CLOSERS = {"^end", "^}", "^%)", "^until", "^else", "^elseif"}

local function matches_any(s, patterns)
    for _, p in ipairs(patterns) do
        if s:find(p) then return true end
    end
    return false
end

-- A block opened on the last line of a multi-line condition or list is
-- indented from the statement's first line, which this line-by-line check
-- does not know: it then asks only for a whole number of units.
local CONTINUATIONS = {"^and%f[%W]", "^or%f[%W]", "^not%f[%W]", "^%.%.", "^\"", "^'", "^[-+*/%%^<>=~]"}

local OPEN_ENDINGS = {"%f[%w]and$", "%f[%w]or$", ",$", "%.%.$", "[-+*/%%^<>=~]$"}

local function indented_as_block(indent, opener)
    if opener.continues then
        return indent % UNIT == 0 and indent > 0 and indent <= opener.indent + UNIT
    end
    return indent == opener.indent + UNIT
end

local function check(path)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    local inside = long_bracket_lines(text)
    local lines = {}
    for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
    local problems = {}
    local function problem(no, what)
        problems[#problems + 1] = ("%s:%d: %s"):format(path, no, what)
    end
    local previous -- {no, indent, opens}
    for no, l in ipairs(lines) do
        if not inside[no] and l:find("%S") then
            local lead = l:match("^[ \t]*")
            if lead:find("\t") then problem(no, "tab in indentation") end
            local indent, body = #lead, l:sub(#lead + 1)
            if previous and previous.opens and not matches_any(body, CLOSERS)
                and not indented_as_block(indent, previous) then
                problem(no, ("indented %d spaces after a block opened at line %d (indented %d): want %d")
                    :format(indent, previous.no, previous.indent, previous.indent + UNIT))
            end
            local code = strip_comment(body)
            previous = {no = no, indent = indent, opens = code:find("%S") and matches_any(code, OPENERS),
                        continues = matches_any(body, CONTINUATIONS) or (previous and previous.ends_open),
                        ends_open = matches_any(code, OPEN_ENDINGS)}
        end
    end
    return problems
end

-- `--from N FILE...` re-indents files written with N-space blocks to UNIT
-- spaces (every code line's leading spaces scaled by UNIT / N), so a file
-- from another style is brought in with one command, then checked.
local function reindent(path, from)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    local inside = long_bracket_lines(text)
    local out, no = {}, 0
    for l in (text .. "\n"):gmatch("([^\n]*)\n") do
        no = no + 1
        if not inside[no] then
            local lead = l:match("^ *")
            l = string.rep(" ", #lead * UNIT // from) .. l:sub(#lead + 1)
        end
        out[#out + 1] = l
    end
    local w = assert(io.open(path, "wb"))
    w:write(table.concat(out, "\n"))
    w:close()
end

local files = {}
if arg[1] == "--from" then
    local from = assert(tonumber(arg[2]), "--from needs the old indentation width")
    for i = 3, #arg do reindent(arg[i], from) end
    for i = 3, #arg do files[#files + 1] = arg[i] end
else
    files = arg
end

local all = {}
for _, path in ipairs(files) do
    for _, p in ipairs(check(path)) do all[#all + 1] = p end
end
for _, p in ipairs(all) do io.stderr:write(p, "\n") end
if #all > 0 then
    io.stderr:write(("lint: %d indentation problem(s) in Lua files (blocks indent by %d spaces)\n"):format(#all, UNIT))
    os.exit(1)
end
print(("lint: %d Lua files indent blocks by %d spaces"):format(#files, UNIT))
