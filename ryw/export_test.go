package ryw
