# Uploads an ESP-IDF build to IoT Support as a firmware bundle and prints the stored
# firmware version.
# Usage: . ./upload.ps1; Upload-Firmware [-Model code] [-Bin path\to\firmware.bin]
# Needs $env:IOTSUPPORT_TOKEN (a pipeline token).
$BackendUrl = __BACKEND_URL__
function Upload-Firmware {
    param([string]$Model, [string]$Bin)
    if (-not $env:IOTSUPPORT_TOKEN) {
        if ($env:IOTSUPPORT_CLIENT_ID) { throw "IOTSUPPORT_CLIENT_ID/IOTSUPPORT_CLIENT_SECRET are not used here: set IOTSUPPORT_TOKEN to a pipeline token, or to an access token issued to that client" }
        throw "set IOTSUPPORT_TOKEN to a pipeline token (iotsupport token create --name ci --role pipeline)"
    }
    $desc = $null
    if (Test-Path "build/project_description.json") { $desc = Get-Content -Raw "build/project_description.json" | ConvertFrom-Json }
    if (-not $Model) { $Model = $desc.project_name }
    if (-not $Bin) { $Bin = "build/$($desc.project_name).bin" }
    if ($Model -cnotmatch '^[a-z0-9_]+$') { throw ('model code must match ^[a-z0-9_]+$, got: ' + $Model) }
    $base = $Bin.Substring(0, $Bin.Length - 4)
    foreach ($f in @($Bin, "$base.elf", "$base.map", "sdkconfig")) { if (-not (Test-Path $f)) { throw "missing $f" } }
    $work = New-Item -ItemType Directory -Path ([System.IO.Path]::Combine([System.IO.Path]::GetTempPath(), [guid]::NewGuid()))
    try {
        # Only a commit id is taken: a repository without commits, or no git, is "unknown".
        $commit = "unknown"
        try {
            $out = git rev-parse --verify --quiet HEAD 2>$null
            if ($LASTEXITCODE -eq 0 -and "$out" -cmatch '^[0-9a-f]+$') { $commit = "$out" }
        } catch { }
        # The firmware version is the image's own (esp_app_desc_t at offset 32): the service refuses any other.
        $img = [System.IO.File]::ReadAllBytes((Resolve-Path $Bin))
        if ($img.Length -lt 80 -or [System.BitConverter]::ToUInt32($img, 32) -ne 0xABCD5432) { throw "$Bin is not an ESP-IDF app image (no app descriptor at offset 32)" }
        $fw = [System.Text.Encoding]::ASCII.GetString($img, 48, 32).Split([char]0)[0]
        if ($fw -cnotmatch '^[A-Za-z0-9._+-]+$') { throw "the app version in $Bin is not a valid firmware version: $fw" }
        $idf = "unknown"
        if ($desc -and $desc.git_revision) { $idf = "$($desc.git_revision)" }
        # ConvertTo-Json does the escaping.
        @{ git_commit = $commit; idf_version = $idf; firmware_version = $fw } | ConvertTo-Json | Set-Content "$work/version.json"
        Copy-Item $Bin "$work/$Model.bin"; Copy-Item "$base.elf" "$work/$Model.elf"; Copy-Item "$base.map" "$work/$Model.map"; Copy-Item sdkconfig "$work/sdkconfig"
        Compress-Archive -Path "$work/$Model.bin", "$work/$Model.elf", "$work/$Model.map", "$work/sdkconfig", "$work/version.json" -DestinationPath "$work/bundle.zip"
        try {
            $r = Invoke-RestMethod -Method Post -Uri "$BackendUrl/api/pipeline/models/$Model/firmware" -InFile "$work/bundle.zip" `
                -ContentType "application/zip" -Headers @{ Authorization = "Bearer $env:IOTSUPPORT_TOKEN" }
        } catch {
            # Show the service's error message, not just the status line.
            $msg = $_.ErrorDetails.Message
            if ($msg) { try { $msg = ($msg | ConvertFrom-Json).error } catch { } }
            if (-not $msg) { $msg = $_.Exception.Message }
            throw "upload failed: $msg"
        }
        Write-Output $r.firmware_version
    } finally { Remove-Item -Recurse -Force $work }
}
