<#
.SYNOPSIS
  Removes what install.ps1 installed (NOT tested: no Windows and no PowerShell here).

.DESCRIPTION
  The logon entries, the machine variable, the firewall rule, the config it wrote and
  %ProgramFiles%\cardlink. BixVReader is a prerequisite and stays. Users' data
  (%USERPROFILE%\.local\state\cardlink, %USERPROFILE%\.config\cardlink) stays unless -Purge.
  Exit codes: 0 removed, 3 not elevated.
#>
[CmdletBinding()]
param([switch]$Purge, [switch]$Silent)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Say([string]$Message) { if (-not $Silent) { Write-Output "cardlink uninstall: $Message" } }
$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
  [Console]::Error.WriteLine('cardlink uninstall: error: run from an elevated PowerShell')
  exit 3
}

$RunKey = 'HKLM:\Software\Microsoft\Windows\CurrentVersion\Run'
foreach ($name in 'cardlink-daemon', 'cardlink-tray') {
  if (Get-ItemProperty -Path $RunKey -Name $name -ErrorAction SilentlyContinue) {
    Remove-ItemProperty -Path $RunKey -Name $name
    Say "removed $RunKey\$name"
  }
}
# Running daemons and trays of this install (their files are about to go).
Get-CimInstance Win32_Process -Filter "Name = 'node.exe'" |
  Where-Object { $_.CommandLine -like '*\cardlink\dist\bin\main.js*' } |
  ForEach-Object { Stop-Process -Id $_.ProcessId -Force -ErrorAction SilentlyContinue }
# Set by installs before the daemon read %ProgramData%\cardlink\daemon.json by itself.
if ([Environment]::GetEnvironmentVariable('CARDLINK_SYSTEM_CONFIG', 'Machine')) {
  [Environment]::SetEnvironmentVariable('CARDLINK_SYSTEM_CONFIG', $null, 'Machine')
  Say 'removed machine variable CARDLINK_SYSTEM_CONFIG'
}
if (Get-NetFirewallRule -Name 'cardlink-vpcd-block' -ErrorAction SilentlyContinue) {
  Remove-NetFirewallRule -Name 'cardlink-vpcd-block'
  Say 'removed firewall rule cardlink-vpcd-block'
}
$ConfDir = Join-Path $env:ProgramData 'cardlink'
foreach ($f in 'daemon.json', 'server-ca.pem') {
  $p = Join-Path $ConfDir $f
  if (Test-Path $p) { Remove-Item $p; Say "removed $p" }
}
if ((Test-Path $ConfDir) -and -not (Get-ChildItem $ConfDir)) { Remove-Item $ConfDir }
$Prefix = Join-Path $env:ProgramFiles 'cardlink'
if (Test-Path $Prefix) { Remove-Item -Recurse -Force $Prefix; Say "removed $Prefix" }

if ($Purge) {
  foreach ($userProfile in Get-CimInstance Win32_UserProfile | Where-Object { -not $_.Special }) {
    foreach ($d in '.local\state\cardlink', '.config\cardlink') {
      $p = Join-Path $userProfile.LocalPath $d
      if (Test-Path $p) { Remove-Item -Recurse -Force $p; Say "removed $p" }
    }
  }
}
Say 'done'
exit 0
