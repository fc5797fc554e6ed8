# Uploads an ESP-IDF build to IoT Support as a firmware bundle.
# Usage: . ./upload.ps1; Upload-Firmware [-Model code] [-Bin path\to\firmware.bin]
# Needs $env:IOTSUPPORT_TOKEN (a pipeline token).
$BackendUrl = "__BACKEND_URL__"
function Upload-Firmware {
    param([string]$Model, [string]$Bin)
    if (-not $env:IOTSUPPORT_TOKEN) { throw "set IOTSUPPORT_TOKEN to a pipeline token" }
    $desc = $null
    if (Test-Path "build/project_description.json") { $desc = Get-Content "build/project_description.json" | ConvertFrom-Json }
    if (-not $Model) { $Model = $desc.project_name }
    if (-not $Bin) { $Bin = "build/$($desc.project_name).bin" }
    $base = $Bin.Substring(0, $Bin.Length - 4)
    foreach ($f in @($Bin, "$base.elf", "$base.map", "sdkconfig")) { if (-not (Test-Path $f)) { throw "missing $f" } }
    $work = New-Item -ItemType Directory -Path ([System.IO.Path]::Combine([System.IO.Path]::GetTempPath(), [guid]::NewGuid()))
    try {
        $commit = try { (git rev-parse HEAD) } catch { "unknown" }
        $version = @{ git_commit = "$commit"; idf_version = "$($desc.git_revision)"; firmware_version = "$($desc.project_version)" }
        $version | ConvertTo-Json | Set-Content "$work/version.json"
        Copy-Item $Bin "$work/$Model.bin"; Copy-Item "$base.elf" "$work/$Model.elf"; Copy-Item "$base.map" "$work/$Model.map"; Copy-Item sdkconfig "$work/sdkconfig"
        Compress-Archive -Path "$work/$Model.bin", "$work/$Model.elf", "$work/$Model.map", "$work/sdkconfig", "$work/version.json" -DestinationPath "$work/bundle.zip"
        $r = Invoke-RestMethod -Method Post -Uri "$BackendUrl/api/pipeline/models/$Model/firmware" -InFile "$work/bundle.zip" `
            -ContentType "application/zip" -Headers @{ Authorization = "Bearer $env:IOTSUPPORT_TOKEN" }
        Write-Output $r.firmware_version
    } finally { Remove-Item -Recurse -Force $work }
}
