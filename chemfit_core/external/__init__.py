"""external"""
