-- etcd v3 JSON gateway: POST {prefix}/kv/put and {prefix}/kv/range, base64 keys and values.
-- Args (after --): mode (put|get|mix) keys value_size serializable(0|1) read_ratio prefix
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local mode, nkeys, read_ratio, put_path, range_path
local puts, ranges = {}, {}
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  seed_thread()
  mode = args[1] or "put"
  nkeys = tonumber(args[2] or "10000")
  local value = base64(string.rep("v", tonumber(args[3] or "100")))
  local serializable = (args[4] == "1") and ',"serializable":true' or ""
  read_ratio = tonumber(args[5] or "0.9")
  local prefix = args[6] or "/v3"
  put_path, range_path = prefix .. "/kv/put", prefix .. "/kv/range"
  for i = 1, nkeys do
    local key = base64(string.format("k%07d", i - 1))
    puts[i] = '{"key":"' .. key .. '","value":"' .. value .. '"}'
    ranges[i] = '{"key":"' .. key .. '"' .. serializable .. '}'
  end
end

function request()
  local i = math.random(nkeys)
  if mode == "get" or (mode == "mix" and math.random() < read_ratio) then
    return wrk.format("POST", range_path, headers, ranges[i])
  end
  return wrk.format("POST", put_path, headers, puts[i])
end
