"""rfcn.engine"""
