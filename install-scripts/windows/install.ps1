<#
.SYNOPSIS
  Installs the cardlink client on Windows for every user (written to the Linux install's contract;
  NOT tested: no Windows and no PowerShell here, see docs/install.md).

.DESCRIPTION
  From a staged client tree (install-scripts/linux/stage.sh client <dir>, built with Windows's
  Node.js so the native modules match): copies it to %ProgramFiles%\cardlink, writes the
  machine-wide client config %ProgramData%\cardlink\daemon.json (checked by
  `cardlink daemon --check` before it replaces the old one; a user's own
  %USERPROFILE%\.config\cardlink\daemon.json overrides it; the daemon reads that machine-wide
  path itself), configures vsmartcard's BixVReader as the reader (it listens on the vpcd port, the
  daemon connects to it: reader.vpcdMode "connect"), and starts the daemon and the tray at every
  user's logon. Idempotent: a second run changes nothing.

  Exit codes (as install.sh): 0 done or nothing to change, 2 bad parameter, 3 not elevated,
  4 prerequisite missing (Node.js 20.19+, BixVReader), 6 settings refused, 7 a step failed.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File install.ps1 -ServerUrl https://cards.example.com/ `
    -Issuer https://idp.example.com/ -ClientId cardlink -CaFile C:\deploy\ca.pem -Silent
#>
[CmdletBinding()]
param(
  [string]$ServerUrl = '',
  # One or more identity providers (-Issuer a,b), the first the default; -ClientId once for all or
  # once per issuer, as install.sh's repeatable --issuer / --client-id.
  [string[]]$Issuer = @(),
  [string[]]$ClientId = @(),
  [string]$CaFile = '',
  # vsmartcard's default vpcd port (0x8C7B); BixVReader's reader 0 listens there.
  [ValidateRange(1, 65534)][int]$VpcdPort = 35963,
  [string]$Source = (Resolve-Path (Join-Path $PSScriptRoot '..\..')).Path,
  [switch]$DryRun,
  [switch]$Silent
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$Prefix = Join-Path $env:ProgramFiles 'cardlink'
$ConfDir = Join-Path $env:ProgramData 'cardlink'
$RunKey = 'HKLM:\Software\Microsoft\Windows\CurrentVersion\Run'
$BixIni = Join-Path $env:SystemRoot 'BixVReader.ini'
$script:Changes = 0

function Fail([int]$Code, [string]$Message) {
  [Console]::Error.WriteLine("cardlink install: error: $Message")
  exit $Code
}
function Say([string]$Message) { if (-not $Silent) { Write-Output "cardlink install: $Message" } }
function Changed([string]$What) {
  $script:Changes++
  if ($DryRun) { Say "would change: $What" } else { Say "changed: $What" }
}
function Put-Text([string]$Path, [string]$Text) {
  if ((Test-Path $Path) -and ((Get-Content -Raw $Path) -eq $Text)) { return }
  Changed $Path
  if (-not $DryRun) {
    New-Item -ItemType Directory -Force -Path (Split-Path $Path) | Out-Null
    [IO.File]::WriteAllText($Path, $Text)
  }
}

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
  Fail 3 'run from an elevated PowerShell (Run as administrator)'
}
if ($ServerUrl -and -not $ServerUrl.StartsWith('https://')) { Fail 2 "-ServerUrl must be an https:// URL (got '$ServerUrl')" }
if (($Issuer.Count -and -not $ClientId.Count) -or ($ClientId.Count -and -not $Issuer.Count)) { Fail 2 '-Issuer and -ClientId go together' }
if ($ClientId.Count -gt 1 -and $ClientId.Count -ne $Issuer.Count) { Fail 2 '-ClientId: give one for every issuer, or one per -Issuer' }
if ($CaFile -and -not (Test-Path -PathType Leaf $CaFile)) { Fail 2 "-CaFile '$CaFile' is not a file" }
if (-not (Select-String -Quiet -Pattern '"cardlinkVariant"' -Path (Join-Path $Source 'package.json'))) {
  Fail 2 "-Source '$Source' is not a staged tree (install-scripts/linux/stage.sh client <dir>)"
}
$node = (Get-Command node -ErrorAction SilentlyContinue).Source
if (-not $node) { Fail 4 'Node.js 20.19 or later is required (nodejs.org MSI, machine-wide)' }
$nodeOk = & $node -e 'const [a,b]=process.versions.node.split(".").map(Number);console.log(a>20||(a===20&&b>=19)?1:0)'
if ($nodeOk -ne '1') { Fail 4 "Node.js 20.19 or later is required (found $(& $node --version))" }
if (-not (Test-Path $BixIni)) { Fail 4 "vsmartcard's BixVReader is not installed ($BixIni): install its MSI first" }

# The client settings, checked by the code being installed before anything changes.
$configText = $null
if ($ServerUrl) {
  $caTarget = if ($CaFile) { Join-Path $ConfDir 'server-ca.pem' } else { '' }
  function Client-Json([string]$Ca) {
    $c = [ordered]@{ server = [ordered]@{ url = $ServerUrl } }
    if ($Ca) { $c.server.caFile = $Ca }
    if ($Issuer.Count -eq 1) { $c.login = [ordered]@{ issuer = $Issuer[0]; clientId = $ClientId[0]; resource = $ServerUrl } }
    if ($Issuer.Count -gt 1) {
      $list = @(for ($i = 0; $i -lt $Issuer.Count; $i++) {
          [ordered]@{ issuer = $Issuer[$i]; clientId = $ClientId[$(if ($ClientId.Count -eq 1) { 0 } else { $i })] } })
      $c.login = [ordered]@{ resource = $ServerUrl; issuers = $list }
    }
    # BixVReader listens (vpcd's normal mode, the only one it has): the daemon connects to it.
    $c.reader = [ordered]@{ transport = 'vpcd'; vpcdMode = 'connect'; vpcdHost = '127.0.0.1'; vpcdPort = $VpcdPort }
    return ($c | ConvertTo-Json -Depth 4) + "`n"
  }
  $configText = Client-Json $caTarget
  $check = Join-Path ([IO.Path]::GetTempPath()) "cardlink-check-$PID.json"
  [IO.File]::WriteAllText($check, (Client-Json $CaFile))
  $env:CARDLINK_SYSTEM_CONFIG = $check
  & $node (Join-Path $Source 'dist\bin\main.js') daemon --check | Out-Null
  $checked = $LASTEXITCODE
  Remove-Item $check
  if ($checked -ne 0) { Fail 6 "the client settings were refused (above); $ConfDir\daemon.json is unchanged" }
}

# The application.
$same = (Test-Path $Prefix) -and -not (Compare-Object (Get-ChildItem -Recurse -File $Source | ForEach-Object {
        $_.FullName.Substring($Source.Length) + ' ' + (Get-FileHash $_.FullName).Hash }) (Get-ChildItem -Recurse -File $Prefix | ForEach-Object {
        $_.FullName.Substring($Prefix.Length) + ' ' + (Get-FileHash $_.FullName).Hash }))
if (-not $same) {
  Changed "$Prefix (application)"
  if (-not $DryRun) {
    if (Test-Path $Prefix) { Remove-Item -Recurse -Force $Prefix }
    Copy-Item -Recurse $Source $Prefix
  }
}

if ($configText) {
  if ($CaFile) { Put-Text (Join-Path $ConfDir 'server-ca.pem') (Get-Content -Raw $CaFile) }
  Put-Text (Join-Path $ConfDir 'daemon.json') $configText
}
# The daemon reads %ProgramData%\cardlink\daemon.json by itself (daemon-config.ts); an earlier
# install pointed it there with a machine variable, which is now dropped.
$configPath = Join-Path $ConfDir 'daemon.json'
if ([Environment]::GetEnvironmentVariable('CARDLINK_SYSTEM_CONFIG', 'Machine') -eq $configPath) {
  Changed 'machine variable CARDLINK_SYSTEM_CONFIG (no longer needed)'
  if (-not $DryRun) { [Environment]::SetEnvironmentVariable('CARDLINK_SYSTEM_CONFIG', $null, 'Machine') }
}

# BixVReader's reader 0 on the vpcd port. BixVReader LISTENS there and the daemon connects (vpcd's
# normal mode). vpcd's listener binds every interface (INADDR_ANY in vpcd.c, no setting): a firewall
# rule keeps other hosts off the port (Windows' firewall does not filter loopback, so the daemon
# still reaches it).
# Two readers, one per daemon slot: the daemon connects to the port and the next (vpcd's two slots).
# ("DECIVE_UNIT" is BixVReader's own spelling of the key.)
$reader = { param($n) "[Reader$n]`r`nRPC_TYPE=2`r`nVENDOR_NAME=Virtual Smart Card Architecture`r`nVENDOR_IFD_TYPE=Virtual PCD`r`nTCP_PORT=$($VpcdPort + $n)`r`nDECIVE_UNIT=$n`r`n" }
$ini = "[Driver]`r`nNumReaders=2`r`n`r`n" + (& $reader 0) + "`r`n" + (& $reader 1)
Put-Text $BixIni $ini
$rule = Get-NetFirewallRule -Name 'cardlink-vpcd-block' -ErrorAction SilentlyContinue
if (-not $rule) {
  Changed 'firewall rule cardlink-vpcd-block (inbound TCP to the vpcd ports from other hosts)'
  if (-not $DryRun) {
    New-NetFirewallRule -Name 'cardlink-vpcd-block' -DisplayName 'cardlink: no remote access to the virtual reader' `
      -Direction Inbound -Protocol TCP -LocalPort $VpcdPort, ($VpcdPort + 1) -RemoteAddress Any -Action Block | Out-Null
  }
}

# Daemon and tray at every user's logon, without a console window (conhost --headless). The daemon
# with its node options (daemon/cli/daemon-process.ts); a Run entry cannot set UV_THREADPOOL_SIZE, so
# libuv keeps its four threads on Windows.
$cmd = "conhost.exe --headless `"$node`""
$mainJs = "`"$Prefix\dist\bin\main.js`""
$daemonEntry = "$cmd --v8-pool-size=1 $mainJs daemon"
foreach ($entry in @(@{ Name = 'cardlink-daemon'; Value = $daemonEntry }, @{ Name = 'cardlink-tray'; Value = "$cmd $mainJs tray" })) {
  $have = (Get-ItemProperty -Path $RunKey -Name $entry.Name -ErrorAction SilentlyContinue)
  if (-not $have -or $have.($entry.Name) -ne $entry.Value) {
    Changed "$RunKey\$($entry.Name)"
    if (-not $DryRun) { Set-ItemProperty -Path $RunKey -Name $entry.Name -Value $entry.Value }
  }
}

if ($script:Changes -eq 0) { Say 'nothing to change: cardlink is installed as asked' } else { Say "$($script:Changes) change(s)" }
exit 0
