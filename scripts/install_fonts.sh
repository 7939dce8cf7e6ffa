#!/usr/bin/env bash
# Install the Debian font packages that deployzoo's synthetic word renderer (deployzoo/data/synth.py) draws with.
#
# Idempotent: when every package below is already installed, apt-get is not called at all, so a repeated run
# takes well under a second. Needs root (or sudo) on Debian/Ubuntu for the first run.
# Prints how many font files (.ttf/.otf/.ttc) it found in the folders the renderer scans.
#
#   bash scripts/install_fonts.sh            # install what is missing, print the count
#   bash scripts/install_fonts.sh --list     # print the package list only
#
# Latin families only: serif, sans, mono, condensed, display, script/handwriting, signage, in regular/bold/italic.
set -euo pipefail

PACKAGES=(
  # workhorse text families (sans / serif / mono, many weights and widths)
  fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-urw-base35 fonts-croscore
  fonts-crosextra-caladea fonts-crosextra-carlito fonts-noto-core fonts-noto-mono
  fonts-roboto-unhinted fonts-roboto-slab fonts-open-sans fonts-lato fonts-freefont-ttf fonts-cantarell
  fonts-texgyre fonts-linuxlibertine fonts-ebgaramond fonts-oxygen fonts-inter fonts-paratype
  fonts-sil-gentiumplus fonts-sil-charis fonts-sil-andika fonts-sil-doulos fonts-vollkorn fonts-oldstandard
  fonts-cmu fonts-lmodern fonts-stix fonts-go fonts-clear-sans fonts-manrope fonts-sora fonts-b612
  fonts-cabin fonts-dosis fonts-karla fonts-jura fonts-play fonts-comfortaa fonts-quicksand
  fonts-linex fonts-arkpandora fonts-tuffy fonts-junction fonts-quattrocento fonts-arapey fonts-fanwood
  fonts-goudybookletter fonts-lindenhill fonts-prociono fonts-levien-museum fonts-cardo fonts-yrsa-rasa
  fonts-century-catalogue fonts-averia-gwf fonts-averia-sans-gwf fonts-averia-serif-gwf
  fonts-adf-accanthis fonts-adf-baskervald fonts-adf-berenis fonts-adf-gillius fonts-adf-ikarius
  fonts-adf-irianis fonts-adf-libris fonts-adf-mekanus fonts-adf-oldania fonts-adf-romande
  fonts-adf-solothurn fonts-adf-switzera fonts-adf-tribun fonts-adf-universalis fonts-adf-verana
  # condensed / signage / display
  fonts-bebas-neue fonts-league-spartan fonts-yanone-kaffeesatz fonts-national-park fonts-roadgeek
  fonts-opendin fonts-routed-gothic fonts-tiresias fonts-allerta fonts-apropal fonts-bajaderka
  fonts-beteckna fonts-okolaks fonts-radisnoir fonts-engadget fonts-staypuft fonts-summersby
  fonts-cherrybomb fonts-cabinsketch fonts-ferrite-core fonts-fantasma fonts-le-murmure fonts-aenigma
  fonts-dustin fonts-eurofurence fonts-opendyslexic fonts-ubuntu-title fonts-dseg fonts-ocr-a fonts-ocr-b
  fonts-blankenburg fonts-gamaliel fonts-levien-typoscript fonts-lobster fonts-lobstertwo fonts-leckerli-one
  # monospace / typewriter
  fonts-inconsolata fonts-hack fonts-firacode fonts-jetbrains-mono fonts-courier-prime fonts-league-mono
  fonts-anonymous-pro fonts-mononoki fonts-3270 fonts-gnutypewriter
  # script / handwriting
  fonts-comic-neue fonts-dancingscript fonts-kaushanscript fonts-kristi fonts-humor-sans
  fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-sjfonts fonts-tomsontalks fonts-rufscript
  fonts-ecolier-court fonts-isabella fonts-havana fonts-essays1743
)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

count_fonts() {
  # the folders deployzoo.data.synth scans (texmf holds TeX Gyre and Latin Modern); symlinks counted once
  find -L /usr/share/fonts /usr/local/share/fonts /usr/share/texmf/fonts/opentype -type f \
    \( -iname '*.ttf' -o -iname '*.otf' -o -iname '*.ttc' \) 2>/dev/null \
    | xargs -r -d '\n' realpath 2>/dev/null | sort -u | wc -l
}

# one dpkg-query for all packages: the packages that are not fully installed
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null \
    | awk '$NF == "installed" && $(NF-1) == "ok" {print $1}' || true)
  for p in "${PACKAGES[@]}"; do
    if ! grep -qx -- "$p" <<<"$installed"; then missing+=("$p"); fi
  done
else
  missing=("${PACKAGES[@]}")
fi

if ((${#missing[@]} == 0)); then
  echo "install_fonts: all ${#PACKAGES[@]} font packages already installed"
else
  echo "install_fonts: installing ${#missing[@]} of ${#PACKAGES[@]} font packages"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_fonts: apt-get not found; install these Debian packages by hand: ${missing[*]}" >&2
    exit 1
  fi
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "install_fonts: need root (or sudo) to run apt-get" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists yet; refresh them when a package is unknown to apt.
  if ! apt-cache show --no-all-versions "${missing[0]}" >/dev/null 2>&1; then
    $SUDO apt-get update -qq
  fi
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/install_fonts.$$.log 2>&1; then
    # stale lists (404 on a superseded .deb): refresh once and retry
    $SUDO apt-get update -qq
    if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/install_fonts.$$.log 2>&1; then
      tail -20 /tmp/install_fonts.$$.log >&2
      echo "install_fonts: apt-get install failed" >&2
      exit 1
    fi
  fi
  rm -f /tmp/install_fonts.$$.log
fi

n=$(count_fonts)
echo "install_fonts: ${n} font files found (/usr/share/fonts, /usr/share/texmf/fonts/opentype)"
if ((n < 300)); then
  echo "install_fonts: expected at least 300 font files" >&2
  exit 1
fi
